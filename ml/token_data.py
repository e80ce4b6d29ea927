"""Words and texts -> model windows for token classification, and per-token probabilities -> words and entities.

Training examples label the *first sub-token of each word* with the word's tag and every other position ``-100``
(transformers' ``run_ner.py``). A sentence longer than ``max_length`` tokens is split into overlapping windows
(``ml.token_windows``): nothing is cut, and each word is labelled, then scored, by exactly one window.
Inference runs the same windows and puts the scored tokens back in order before reading words or entities off them.
Span data (raw text with character spans) becomes words and tags here too (:func:`span_sentence`): the words are the
tokenizer's own pre-tokenizer's, so that a model trained on them sees the tokens it will see on raw text.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.task_types.tagging import IOB2, SpanAlignment, align_spans, encode_entities
from models.base import IGNORE_INDEX

from .token_aggregation import ScoredToken, aggregate
from .token_windows import plan_windows

DEFAULT_STRIDE = 32  # tokens of context shared by neighbouring windows


def effective_stride(max_length: int, stride: int | None) -> int:
    """The stride actually used with ``max_length``: at most ``max_length // 2 - 1``, so that each window moves on
    by more than it shares (training and serving must cut the same windows: both call this)."""
    return max(0, min(DEFAULT_STRIDE if stride is None else int(stride), int(max_length) // 2 - 1))


@dataclass
class WindowInput:
    """One window of one source (sentence or text) as the model sees it, with what is needed to read it back.

    ``input_ids`` include [CLS] and [SEP]; ``positions[k]`` is the source token index of window position ``k``
    (``None`` for the special tokens) when that position is scored by this window, else ``None`` too.
    ``labels`` (training only) are the tag ids at scored first sub-tokens, ``-100`` elsewhere.
    """

    source: int
    input_ids: list[int]
    positions: list[int | None]
    labels: list[int] | None = None


def _windows(source: int, ids: Sequence[int], tokenizer, max_length: int, stride: int) -> list[WindowInput]:
    out = []
    for window in plan_windows(len(ids), max_length, stride):
        positions = [None] + [window.start + i if scored else None for i, scored in enumerate(window.scores)] + [None]
        out.append(WindowInput(source, [tokenizer.cls_token_id, *ids[window.start:window.end],
                                        tokenizer.sep_token_id], positions))
    return out


def word_windows(tokenizer, sentences: Sequence[Sequence[str]], max_length: int, stride: int = DEFAULT_STRIDE,
                 tags: Sequence[Sequence[str]] | None = None, label2id: dict[str, int] | None = None
                 ) -> tuple[list[WindowInput], list[list[int | None]]]:
    """Windows for pre-tokenized sentences, and each sentence's ``word_ids`` (the word of every sub-token).

    With ``tags`` and ``label2id``: each window's ``labels`` carry the tag of every word whose first sub-token it
    scores. A word the tokenizer turns into no token at all (a lone control character) has no position to label.
    """
    encoded = tokenizer([list(words) for words in sentences], is_split_into_words=True, add_special_tokens=False,
                        truncation=False)
    windows: list[WindowInput] = []
    all_word_ids = []
    for s in range(len(sentences)):
        word_ids = encoded.word_ids(s)
        all_word_ids.append(word_ids)
        first = [i == 0 or word_ids[i] != word_ids[i - 1] for i in range(len(word_ids))]
        for window in _windows(s, encoded["input_ids"][s], tokenizer, max_length, stride):
            if tags is not None:
                window.labels = [
                    label2id[tags[s][word_ids[p]]] if p is not None and first[p] else IGNORE_INDEX
                    for p in window.positions
                ]
            windows.append(window)
    return windows, all_word_ids


_FALLBACK_WORDS = re.compile(r"\w+|[^\w\s]")  # BERT's basic split: runs of word characters, single other marks


def text_words(tokenizer, text: str) -> list[tuple[str, int, int]]:
    """The words of a raw text with their character offsets ``(word, start, end)``, as the tokenizer's pre-tokenizer
    splits it (a fast tokenizer's ``backend_tokenizer.pre_tokenizer``; without one, BERT's basic split). Each piece
    is read from the text itself and trimmed of whitespace (a byte-level or metaspace pre-tokenizer keeps the space
    before a word); blank pieces are left out."""
    pre_tokenizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if pre_tokenizer is not None:
        pieces = [offsets for _, offsets in pre_tokenizer.pre_tokenize_str(text)]
    else:
        pieces = [match.span() for match in _FALLBACK_WORDS.finditer(text)]
    words = []
    for start, end in pieces:
        piece = text[start:end]
        stripped = piece.lstrip()
        start += len(piece) - len(stripped)
        stripped = stripped.rstrip()
        if stripped:
            words.append((stripped, start, start + len(stripped)))
    if not words and text.strip():  # a pre-tokenizer that leaves a non-blank text without words: one word
        stripped = text.strip()
        start = text.index(stripped)
        words.append((stripped, start, start + len(stripped)))
    return words


def span_sentence(tokenizer, text: str, spans: Iterable[tuple[int, int, str]]
                  ) -> tuple[list[str], list[str], SpanAlignment]:
    """A raw text and its character spans ``(start, end, type)`` as words (:func:`text_words`), their IOB2 tags, and
    the alignment (``core.task_types.tagging.align_spans``: how many spans were snapped to word boundaries or
    dropped)."""
    words = text_words(tokenizer, text)
    alignment = align_spans([(start, end) for _, start, end in words], spans)
    return [word for word, _, _ in words], encode_entities(len(words), alignment.entities, IOB2), alignment


@dataclass
class SpanReport:
    """What became of a span dataset's spans on the way to word tags (a job's ``metrics["data_report"]``)."""

    spans: int = 0  # spans read
    snapped: int = 0  # widened or narrowed to word boundaries (still trained on / scored)
    dropped: int = 0  # covering no word, or overlapping an earlier span once snapped (left out)
    dropped_types: Counter = field(default_factory=Counter)  # the dropped spans by entity type

    def add(self, spans: int, alignment: SpanAlignment) -> None:
        """Count one text's ``spans`` and its alignment."""
        self.spans += spans
        self.snapped += alignment.snapped
        self.dropped += alignment.dropped
        self.dropped_types.update(alignment.dropped_types)

    def as_dict(self) -> dict[str, int]:
        return {"spans": self.spans, "snapped": self.snapped, "dropped": self.dropped}


def text_windows(tokenizer, texts: Sequence[str], max_length: int, stride: int = DEFAULT_STRIDE
                 ) -> tuple[list[WindowInput], list[dict]]:
    """Windows for raw texts, and per text its tokens (``tokens``, character ``offsets``, ``unknown`` flags)."""
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False, return_offsets_mapping=True)
    windows: list[WindowInput] = []
    sources = []
    for t in range(len(texts)):
        ids = encoded["input_ids"][t]
        sources.append({"tokens": tokenizer.convert_ids_to_tokens(ids), "offsets": encoded["offset_mapping"][t],
                        "unknown": [i == tokenizer.unk_token_id for i in ids]})
        windows.extend(_windows(t, ids, tokenizer, max_length, stride))
    return windows, sources


def gather(windows: Sequence[WindowInput], probs: Sequence[np.ndarray], lengths: Sequence[int]) -> list[np.ndarray]:
    """Per source, the (N, C) probabilities of its N tokens in order, each from the window that scores it.
    ``probs[w]`` is window ``w``'s (T_w, C) softmax; ``lengths[s]`` the token count of source ``s``."""
    num_labels = probs[0].shape[-1] if len(probs) else 0
    out = [np.zeros((n, num_labels), dtype=np.float32) for n in lengths]
    for window, p in zip(windows, probs):
        for k, position in enumerate(window.positions):
            if position is not None:
                out[window.source][position] = p[k]
    return out


def word_tags(token_probs: np.ndarray, word_ids: Sequence[int | None], num_words: int, id2label: Sequence[str],
              fallback: str = "O") -> tuple[list[str], list[float]]:
    """A tag and its probability per word, read at the word's first sub-token; a word without any token gets
    ``fallback`` (``O``, or the first tag when the tag set has no ``O``) with score 0."""
    fallback = fallback if fallback in id2label else id2label[0]
    tags, scores = [fallback] * num_words, [0.0] * num_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word is None or word in seen:
            continue
        seen.add(word)
        best = int(token_probs[position].argmax())
        tags[word], scores[word] = id2label[best], float(token_probs[position][best])
    return tags, scores


def text_entities(text: str, source: dict, token_probs: np.ndarray, id2label: Sequence[str],
                  strategy: str = "first", subword_prefix: str | None = "##") -> list[dict]:
    """The entities of one raw text from its tokens' probabilities (``ml.token_aggregation.aggregate``)."""
    tokens = [ScoredToken(token, int(start), int(end), token_probs[i], unknown)
              for i, (token, (start, end), unknown)
              in enumerate(zip(source["tokens"], source["offsets"], source["unknown"]))]
    return aggregate(text, tokens, id2label, strategy, subword_prefix=subword_prefix)
