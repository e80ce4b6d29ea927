"""Per-token probabilities -> entities, with the meaning of the Hugging Face token-classification pipeline's
``aggregation_strategy`` (``none``, ``simple``, ``first``, ``average``, ``max``).

Input is one text's content tokens in order, each scored once (see ``ml.token_windows``): the token's string, its
character offsets into the text, its probabilities over the model's tags and whether it is the unknown token.
Outputs follow the pipeline's rules (word grouping by WordPiece's ``##`` continuation, entity grouping on
``B-``/``I-`` prefixes, ``O`` dropped) with one difference: ``word`` is always ``text[start:end]``, the characters
the entity covers, instead of tokens joined back into a string.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("none", "simple", "first", "average", "max")
WORD_STRATEGIES = ("first", "average", "max")
IGNORED = ("O",)


@dataclass(frozen=True)
class ScoredToken:
    """One content token of a text: ``probs`` (C,) over the model's tags."""

    token: str
    start: int
    end: int
    probs: np.ndarray
    unknown: bool = False


def _is_subword(token: ScoredToken, text: str, subword_prefix: str | None) -> bool:
    """The pipeline's test: with a word-aware tokenizer (a continuation prefix such as ``##``), a token whose string
    is longer than the characters it covers is a continuation; otherwise a token glued to the previous character."""
    if token.unknown:
        return False
    if subword_prefix:
        return len(token.token) != token.end - token.start
    return token.start > 0 and " " not in text[token.start - 1:token.start + 1]


def _tag(label: str) -> tuple[str, str]:
    """The pipeline's reading of a tag: ``B``/``I`` and the type; a tag without those prefixes continues (``I``)."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def _word(group: list[ScoredToken], strategy: str) -> tuple[np.ndarray, int, int]:
    """One word's scores under ``strategy``, and its character span."""
    if strategy == "first":
        scores = group[0].probs
    elif strategy == "max":
        scores = max(group, key=lambda t: t.probs.max()).probs
    elif strategy == "average":
        scores = np.nanmean(np.stack([t.probs for t in group]), axis=0)
    else:
        raise ValueError(f"unknown aggregation strategy {strategy!r}")
    return scores, group[0].start, group[-1].end


def aggregate(text: str, tokens: Sequence[ScoredToken], id2label: Sequence[str], strategy: str = "first", *,
              subword_prefix: str | None = "##") -> list[dict]:
    """The entities of ``text``: ``[{"entity_group", "score", "word", "start", "end"}]`` (``none``: one entry per
    token not tagged ``O``, ``{"entity", "entity_group", "score", "index", "word", "start", "end"}``, ``index``
    counting content tokens from 0)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown aggregation_strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    # (label, score, start, end) per token or per word, in order
    units: list[tuple[str, float, int, int]] = []
    if strategy in ("none", "simple"):
        for token in tokens:
            best = int(token.probs.argmax())
            units.append((id2label[best], float(token.probs[best]), token.start, token.end))
    else:
        group: list[ScoredToken] = []
        for token in tokens:
            if group and not _is_subword(token, text, subword_prefix):
                units.append(_label_word(group, strategy, id2label))
                group = []
            group.append(token)
        if group:
            units.append(_label_word(group, strategy, id2label))
    if strategy == "none":
        return [{"entity": label, "entity_group": _tag(label)[1], "score": score, "index": index,
                 "word": text[start:end], "start": start, "end": end}
                for index, (label, score, start, end) in enumerate(units) if label not in IGNORED]
    return [entity for entity in _group(units, text) if entity["entity_group"] not in IGNORED]


def _label_word(group: list[ScoredToken], strategy: str, id2label: Sequence[str]) -> tuple[str, float, int, int]:
    scores, start, end = _word(group, strategy)
    best = int(scores.argmax())
    return id2label[best], float(scores[best]), start, end


def _group(units: list[tuple[str, float, int, int]], text: str) -> list[dict]:
    """Adjacent units of one type merge unless the next one is a ``B-``: the pipeline's ``group_entities``."""
    groups: list[list[tuple[str, float, int, int]]] = []
    for unit in units:
        prefix, kind = _tag(unit[0])
        if groups and prefix != "B" and _tag(groups[-1][-1][0])[1] == kind:
            groups[-1].append(unit)
        else:
            groups.append([unit])
    entities = []
    for members in groups:
        start, end = members[0][2], members[-1][3]
        entities.append({
            "entity_group": members[0][0].split("-", 1)[-1],
            "score": float(np.nanmean([m[1] for m in members])),
            "word": text[start:end], "start": start, "end": end,
        })
    return entities
