"""Question answering's model inputs: each (question, context) pair as one or more windows of at most ``max_length``.

``[CLS] question [SEP] context-part [SEP]``: a context too long for one window is split into windows that overlap by
``doc_stride`` tokens, with the fast tokenizer's ``return_overflowing_tokens`` (``truncation="only_second"``: the
question is never cut); each window keeps its context tokens' character offsets (``None`` for the question,
specials and padding), so a span of tokens is a span of the context. A training window holds its answer's first and
last token positions, or points both at ``[CLS]`` (position 0) when the answer is not wholly inside it (or the
question is unanswerable), as in transformers' ``run_qa.py``.

Lengths are checked before any window is made (:func:`check_lengths`): a question that leaves the context no more
room than ``doc_stride`` would make the tokenizer panic; it is a :class:`QAInputError` naming the question instead.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.task_types.question_answering import SPECIAL_TOKENS, question_budget
from ml.backend import InputError

TOKENIZE_CHUNK = 512  # pairs per tokenizer call: a stop request is seen in between


class QAInputError(InputError):
    """A question too long for ``max_length`` and ``doc_stride``, or input that is not question + context pairs."""


@dataclass
class Window:
    """One window of one example: its token ids (and segment ids), each token's character span of the context
    (``None`` outside the context), the example it came from, and its labels (training)."""

    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]
    source: int
    start_position: int = 0
    end_position: int = 0

    @property
    def context_positions(self) -> list[int]:
        return [k for k, span in enumerate(self.offsets) if span is not None]


def check_lengths(tokenizer: Any, questions: Sequence[str], max_length: int, doc_stride: int) -> None:
    """:class:`QAInputError` for the first question too long for ``max_length`` with ``doc_stride`` (counted in the
    tokenizer's tokens), before any window is made: "question N ..." (N counts from 1 in ``questions``), with its
    ``position`` so that a caller of a chunk of a dataset can name its row instead (``InputError.about``)."""
    if doc_stride < 1 or question_budget(max_length, doc_stride) < 1:
        raise QAInputError(f"doc_stride ({doc_stride}) must be less than max_length - {SPECIAL_TOKENS + 1} "
                           f"({max_length - SPECIAL_TOKENS - 1})")
    budget = question_budget(max_length, doc_stride)
    lengths = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    for position, length in enumerate(lengths):
        if length > budget:
            reason = (f"has {length} tokens: with max_length {max_length} and doc_stride {doc_stride} a question may "
                      f"have at most {budget} (shorten it, or lower doc_stride)")
            raise QAInputError(f"question {position + 1} {reason}", position=position, reason=reason,
                               noun="question")


def _token_positions(offsets: Sequence[tuple[int, int] | None], start: int, end: int) -> tuple[int, int] | None:
    """The first and last context token of the character span [start, end), or None when it is not wholly inside
    this window's context."""
    inside = [k for k, span in enumerate(offsets) if span is not None]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
        return None
    first = next(k for k in inside if offsets[k][1] > start)
    last = next(k for k in reversed(inside) if offsets[k][0] < end)
    return (first, last) if first <= last else None


def make_windows(tokenizer: Any, questions: Sequence[str], contexts: Sequence[str], max_length: int, doc_stride: int,
                 answers: Sequence[tuple[int, int] | None] | None = None,
                 check_stop: Callable[[], None] | None = None) -> list[Window]:
    """Every window of every (question, context) pair, in pair order; ``answers``: per pair the character span
    ``(start, end)`` of the answer to label (None: unanswerable). Lengths are checked first (:func:`check_lengths`)."""
    if len(questions) != len(contexts):
        raise QAInputError(f"{len(questions)} questions but {len(contexts)} contexts")
    check_lengths(tokenizer, questions, max_length, doc_stride)
    windows: list[Window] = []
    for begin in range(0, len(questions), TOKENIZE_CHUNK):
        if check_stop is not None:
            check_stop()
        end = begin + TOKENIZE_CHUNK
        encoded = tokenizer(list(questions[begin:end]), list(contexts[begin:end]), truncation="only_second",
                            max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True, return_token_type_ids=True, padding=False)
        for i, ids in enumerate(encoded["input_ids"]):
            source = begin + encoded["overflow_to_sample_mapping"][i]
            sequence_ids = encoded.sequence_ids(i)
            offsets = [tuple(span) if sequence_ids[k] == 1 else None
                       for k, span in enumerate(encoded["offset_mapping"][i])]
            window = Window(list(ids), list(encoded["token_type_ids"][i]), offsets, source)
            span = answers[source] if answers is not None else None
            if span is not None:
                positions = _token_positions(offsets, *span)
                if positions is not None:
                    window.start_position, window.end_position = positions
            windows.append(window)
    return windows

