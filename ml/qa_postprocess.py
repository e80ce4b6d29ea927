"""From start / end logits to answers: the best spans of a context across all its windows.

Transformers 5 ships no question-answering pipeline, so this is ours (tested against a brute-force search over
every span, ``tests/ml/test_qa_postprocess.py``). Per window, start and end logits are turned into probabilities by
a softmax over the positions an answer may take there -- its context tokens and ``[CLS]`` (position 0, "not in this
window") -- as the transformers pipeline does; a span ``(i, j)`` of context tokens with ``i <= j`` and at most
``max_answer_length`` tokens scores ``p_start[i] * p_end[j]``; spans that leave the context or run backwards are never
candidates. The no-answer score of an example is the smallest ``p_start[0] * p_end[0]`` over its windows (the window
most sure the answer is in it decides, as ``run_qa.py``'s ``min_null_score``). Candidates of every window are ranked
together; the ``top_k`` best distinct spans of the context are returned, with no answer among them (``""`` at 0, 0)
when the model allows it (it was trained with unanswerable questions) and it scores high enough. A span found in
two overlapping windows counts once, with its best score.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_MAX_ANSWER_LENGTH = 30  # tokens
DEFAULT_TOP_K = 1


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    exp = np.exp(shifted)
    return exp / exp.sum()


def window_candidates(start_logits: Sequence[float], end_logits: Sequence[float],
                      offsets: Sequence[tuple[int, int] | None], max_answer_length: int, top_k: int
                      ) -> tuple[list[tuple[float, int, int]], float]:
    """One window's best ``top_k`` spans as ``(score, char_start, char_end)`` and its no-answer score."""
    context = np.array([span is not None for span in offsets], dtype=bool)  # (T,)
    allowed = context.copy()
    allowed[0] = True  # [CLS]: "the answer is not in this window"
    start = np.asarray(start_logits, dtype=np.float64)[: len(offsets)]  # (T,)
    end = np.asarray(end_logits, dtype=np.float64)[: len(offsets)]  # (T,)
    p_start = np.zeros(len(offsets))
    p_end = np.zeros(len(offsets))
    p_start[allowed], p_end[allowed] = _softmax(start[allowed]), _softmax(end[allowed])
    null = float(p_start[0] * p_end[0])
    positions = np.flatnonzero(context)
    if not len(positions):
        return [], null
    # every (i, i + l) with l < max_answer_length: a (T_ctx, L) band of scores, invalid cells at -1
    length = max(1, int(max_answer_length))
    ends = positions[:, None] + np.arange(length)[None, :]  # (T_ctx, L)
    valid = ends < len(offsets)
    ends = np.where(valid, ends, 0)
    valid &= context[ends]
    scores = np.where(valid, p_start[positions][:, None] * p_end[ends], -1.0)  # (T_ctx, L)
    flat = scores.ravel()
    k = min(top_k, int(valid.sum()))
    if k == 0:
        return [], null
    best = np.argpartition(-flat, k - 1)[:k]
    out = []
    for cell in best:
        row, width = divmod(int(cell), length)
        i, j = int(positions[row]), int(ends[row, width])
        out.append((float(flat[cell]), offsets[i][0], offsets[j][1]))
    return out, null


def best_answers(context: str, windows: Sequence[tuple[Sequence[float], Sequence[float],
                                                       Sequence[tuple[int, int] | None]]],
                 *, max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH, top_k: int = DEFAULT_TOP_K,
                 allow_no_answer: bool = False) -> list[dict[str, Any]]:
    """The ``top_k`` best answers to one question, best first: ``{"answer", "score", "start", "end"}`` with
    ``answer == context[start:end]``. ``windows``: per window its start logits, end logits and token offsets.
    Without any candidate span (no context token) the answer is no answer at score 0."""
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    spans: dict[tuple[int, int], float] = {}
    null: float | None = None
    for start_logits, end_logits, offsets in windows:
        candidates, window_null = window_candidates(start_logits, end_logits, offsets, max_answer_length, top_k)
        null = window_null if null is None else min(null, window_null)
        for score, begin, end in candidates:
            if score > spans.get((begin, end), -1.0):
                spans[(begin, end)] = score
    ranked = sorted(((score, begin, end) for (begin, end), score in spans.items()), key=lambda c: (-c[0], c[1], c[2]))
    answers = [{"answer": context[begin:end], "score": score, "start": begin, "end": end}
               for score, begin, end in ranked]
    if allow_no_answer and null is not None:
        answers.append({"answer": "", "score": null, "start": 0, "end": 0})
        answers.sort(key=lambda a: -a["score"])  # stable: a tie keeps the span first
    if not answers:
        return [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    return answers[:top_k]
