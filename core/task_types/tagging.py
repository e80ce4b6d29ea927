"""Tag sequences and entities: tag schemes, entity decoding, character spans -> word tags, and entity metrics.

Torch-free (the web validates datasets with it, the worker trains and scores with it). Words are the unit: a
sentence is a list of words, each with one tag; sub-word tokens are the model's business (``ml``), not this module's.

Schemes. Entity tags carry a prefix and a type, ``B-person``; plain tag sets (part-of-speech) carry none.
- ``IOB2``: every entity starts with ``B-``; ``I-`` continues it.
- ``IOB1``: an entity starts with ``I-``; ``B-`` only separates two adjacent entities of the same type.
- ``BIOES`` (also written BILOU: ``L-`` = ``E-``, ``U-`` = ``S-``): ``S-`` a one-word entity, ``E-`` its last word.
- ``plain``: no prefixes; scored per word (token accuracy, per-tag F1), never as entities.
All prefixed schemes decode with the CoNLL-2000 ``conlleval`` chunk rules (what ``seqeval`` does by default), which
read IOB1, IOB2 and BIOES alike: a chunk starts at ``B``/``S``, or at an ``I``/``E`` whose type differs from the
previous word's, and ends before ``B``/``S``/``O``, after ``E``/``S``, or where the type changes.
"""
from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

OUTSIDE = "O"
IOB2, IOB1, BIOES, PLAIN = "IOB2", "IOB1", "BIOES", "plain"
SCHEMES = (IOB2, IOB1, BIOES, PLAIN)

_PREFIXED = re.compile(r"^([BIESLU])-(.+)$")
_BILOU = {"L": "E", "U": "S"}  # BILOU letters as their BIOES twins


def split_tag(tag: str) -> tuple[str, str]:
    """``("B", "person")`` for ``B-person`` (BILOU's ``L``/``U`` read as ``E``/``S``); ``("O", "")`` for ``O``;
    ``("", tag)`` for a tag without a prefix."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    match = _PREFIXED.match(tag)
    if match is None:
        return "", tag
    prefix, kind = match.groups()
    return _BILOU.get(prefix, prefix), kind


def entity_types(tags: Iterable[str]) -> list[str]:
    """The sorted entity types named by prefixed tags."""
    return sorted({kind for prefix, kind in map(split_tag, tags) if prefix not in ("", OUTSIDE)})


def detect_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """The tag scheme of a tagged corpus (see the module docstring).

    Plain when any tag other than ``O`` lacks a prefix; BIOES when any ``E``/``S`` (or BILOU ``L``/``U``) appears;
    IOB1 when some entity opens with ``I-`` and every ``B-`` follows a word of the same type (it only separates
    neighbours); IOB2 otherwise.
    """
    prefixes: set[str] = set()
    opens_with_i = False
    b_after_other = False  # a B- that IOB1 would not write: one not following a word of its own type
    for tags in sentences:
        prev_prefix, prev_kind = OUTSIDE, ""
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix == "":
                return PLAIN
            prefixes.add(prefix)
            continues = prev_prefix != OUTSIDE and prev_kind == kind
            if prefix == "I" and not continues:
                opens_with_i = True
            if prefix == "B" and not continues:
                b_after_other = True
            prev_prefix, prev_kind = prefix, kind
    if prefixes & {"E", "S"}:
        return BIOES
    if opens_with_i and not b_after_other:
        return IOB1
    return IOB2


@dataclass(frozen=True, order=True)
class Entity:
    """An entity over words ``start`` (inclusive) to ``end`` (exclusive) of a sentence."""

    start: int
    end: int
    type: str


def _ends(prev: str, prev_kind: str, prefix: str, kind: str) -> bool:
    """Whether the chunk open at the previous word ends before this one (conlleval's endOfChunk)."""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and prefix in ("B", "S", OUTSIDE):
        return True
    return prev != OUTSIDE and prev_kind != kind


def _starts(prev: str, prev_kind: str, prefix: str, kind: str) -> bool:
    """Whether a chunk starts at this word (conlleval's startOfChunk)."""
    if prefix in ("B", "S"):
        return True
    if prefix in ("I", "E") and prev in ("E", "S", OUTSIDE):
        return True
    return prefix != OUTSIDE and prev_kind != kind


def decode_entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one tagged sentence, in order, decoded with the conlleval chunk rules (any prefixed scheme)."""
    entities: list[Entity] = []
    open_start: int | None = None
    prev, prev_kind = OUTSIDE, ""
    for i, tag in enumerate(list(tags) + [OUTSIDE]):  # a final O closes the last chunk
        prefix, kind = split_tag(tag)
        if prefix == "":  # a plain tag has no chunks
            prefix, kind = OUTSIDE, ""
        if open_start is not None and _ends(prev, prev_kind, prefix, kind):
            entities.append(Entity(open_start, i, prev_kind))
            open_start = None
        if _starts(prev, prev_kind, prefix, kind):
            open_start = i
        prev, prev_kind = prefix, kind
    return entities


def encode_entities(length: int, entities: Iterable[Entity], scheme: str = IOB2) -> list[str]:
    """Tags for a sentence of ``length`` words holding ``entities`` (non-overlapping) in ``scheme``."""
    tags = [OUTSIDE] * length
    previous_end, previous_type = -1, None
    for entity in sorted(entities):
        width = entity.end - entity.start
        for i in range(entity.start, entity.end):
            tags[i] = f"I-{entity.type}"
        if scheme == IOB2:
            tags[entity.start] = f"B-{entity.type}"
        elif scheme == IOB1:
            if previous_end == entity.start and previous_type == entity.type:
                tags[entity.start] = f"B-{entity.type}"
        elif scheme == BIOES:
            if width == 1:
                tags[entity.start] = f"S-{entity.type}"
            else:
                tags[entity.start] = f"B-{entity.type}"
                tags[entity.end - 1] = f"E-{entity.type}"
        else:
            raise ValueError(f"scheme {scheme!r} has no entities")
        previous_end, previous_type = entity.end, entity.type
    return tags


# ---------------------------------------------------------------- character spans -> word entities


@dataclass
class SpanAlignment:
    """Word entities made from character spans, with what had to be adjusted on the way."""

    entities: list[Entity] = field(default_factory=list)
    snapped: int = 0  # spans whose ends fell inside a word or on spaces, widened or narrowed to word boundaries
    dropped: int = 0  # spans that covered no word, or that overlapped an earlier span once snapped
    dropped_types: Counter = field(default_factory=Counter)  # the dropped spans' entity types (gold never tagged)


def align_spans(word_offsets: Sequence[tuple[int, int]], spans: Iterable[tuple[int, int, str]]) -> SpanAlignment:
    """Map character spans ``(start, end, type)`` onto words given by their character ``(start, end)`` offsets.

    A span takes every word it overlaps by at least one character; if its ends do not fall on that run's word
    boundaries it is *snapped* to them (counted). A span that overlaps no word (only spaces), or whose words overlap
    a span taken before it (in order of start), is *dropped* (counted). Nothing is dropped silently.
    """
    starts = [start for start, _ in word_offsets]
    ends = [end for _, end in word_offsets]
    result = SpanAlignment()
    taken = [False] * len(word_offsets)
    for start, end, kind in sorted(spans, key=lambda s: (s[0], s[1])):
        first = bisect.bisect_right(ends, start)  # first word ending after the span starts
        last = bisect.bisect_left(starts, end) - 1  # last word starting before the span ends
        if first > last or any(taken[first:last + 1]):
            result.dropped += 1
            result.dropped_types[kind] += 1
            continue
        if starts[first] != start or ends[last] != end:
            result.snapped += 1
        for i in range(first, last + 1):
            taken[i] = True
        result.entities.append(Entity(first, last + 1, kind))
    return result


# ---------------------------------------------------------------- metrics


def _prf(true_positives: int, predicted: int, actual: int) -> tuple[float, float, float]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                   unscored: Mapping[str, int] | None = None) -> dict:
    """Entity-level micro precision / recall / F1 (exact span and type, as ``seqeval``'s default mode), the same per
    entity type with its support (gold entities), and token accuracy, over sentences of gold and predicted tags.
    ``unscored``: gold entities per type that no tag could carry (span data's spans dropped on the way to words:
    :class:`SpanAlignment`), counted in the support and so as false negatives -- a prediction can never find them,
    and leaving them out would score a model on the easy spans only.

    Returns ``{"precision", "recall", "f1", "accuracy", "per_type": {type: {"precision", "recall", "f1",
    "support"}}, "support", "tokens"}``; every number on a 0-1 scale.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    hits: Counter = Counter()
    gold_counts: Counter = Counter()
    pred_counts: Counter = Counter()
    correct_tokens = total_tokens = 0
    for gold_tags, pred_tags in zip(gold, predicted):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"a sentence of {len(gold_tags)} gold tags has {len(pred_tags)} predicted")
        correct_tokens += sum(g == p for g, p in zip(gold_tags, pred_tags))
        total_tokens += len(gold_tags)
        gold_entities = set(decode_entities(gold_tags))
        pred_entities = set(decode_entities(pred_tags))
        gold_counts.update(e.type for e in gold_entities)
        pred_counts.update(e.type for e in pred_entities)
        hits.update(e.type for e in gold_entities & pred_entities)
    gold_counts.update(unscored or {})
    per_type = {}
    for kind in sorted(set(gold_counts) | set(pred_counts)):
        precision, recall, f1 = _prf(hits[kind], pred_counts[kind], gold_counts[kind])
        per_type[kind] = {"precision": precision, "recall": recall, "f1": f1, "support": gold_counts[kind]}
    precision, recall, f1 = _prf(sum(hits.values()), sum(pred_counts.values()), sum(gold_counts.values()))
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "accuracy": correct_tokens / total_tokens if total_tokens else 0.0,
        "per_type": per_type, "support": sum(gold_counts.values()), "tokens": total_tokens,
    }


def tag_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Per-word scores for plain tag sets: token accuracy, macro-F1 and per-tag precision / recall / F1 / support."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    hits: Counter = Counter()
    gold_counts: Counter = Counter()
    pred_counts: Counter = Counter()
    for gold_tags, pred_tags in zip(gold, predicted):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"a sentence of {len(gold_tags)} gold tags has {len(pred_tags)} predicted")
        for g, p in zip(gold_tags, pred_tags):
            gold_counts[g] += 1
            pred_counts[p] += 1
            hits[g] += g == p
    per_tag = {}
    for tag in sorted(set(gold_counts) | set(pred_counts)):
        precision, recall, f1 = _prf(hits[tag], pred_counts[tag], gold_counts[tag])
        per_tag[tag] = {"precision": precision, "recall": recall, "f1": f1, "support": gold_counts[tag]}
    total = sum(gold_counts.values())
    scored = [v["f1"] for k, v in per_tag.items() if gold_counts[k]]
    return {
        "accuracy": sum(hits.values()) / total if total else 0.0,
        "macro_f1": sum(scored) / len(scored) if scored else 0.0,
        "per_tag": per_tag, "tokens": total,
    }
