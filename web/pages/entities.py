"""Token-classification results as HTML: a text with its entities highlighted inline, a pre-tokenized sentence with
its tags, and a tag set's entity types (the job page's label filter, the model page).

The HTML is built here, in Python, from escaped pieces only: the text is split at the entities' character offsets
and every piece (text, entity type, score) goes through :func:`markupsafe.escape`; templates never apply ``|safe``
to user text. Each entity type gets one class of a small fixed palette (``ent-0`` ... ``ent-7`` in style.css),
chosen from its name (CRC-32, the same in every process), so a type keeps its colour across pages.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from core.task_types.tagging import OUTSIDE, PLAIN, decode_entities, detect_scheme, entity_types, split_tag

from . import bp
from .filters import num

PALETTE_SIZE = 8  # .ent-0 ... .ent-7 in style.css


@bp.app_template_global()
def palette_class(kind: str) -> str:
    """The palette class of an entity type (or tag): the same for the same name, everywhere."""
    return f"ent-{zlib.crc32(kind.encode('utf-8')) % PALETTE_SIZE}"


@bp.app_template_global()
def tag_types(tags: Iterable[str]) -> list[str]:
    """What a ``?label=`` filter of a token job matches for a model's tag set: its entity types (tags without their
    ``B-``/``I-``/``E-``/``S-`` prefixes); for a plain tag set (part-of-speech), the tags themselves but ``O``."""
    tags = [str(t) for t in tags]
    if detect_scheme([tags]) == PLAIN:
        return sorted(set(tags) - {OUTSIDE})
    return entity_types(tags)


def _score_title(kind: str, score: Any) -> str:
    return f"{kind} · score {num(score)}" if isinstance(score, (int, float)) else kind


def _mark(piece: str, kind: str, score: Any) -> str:
    """One entity: ``<mark>`` with its palette class, its type as a small label and its score on hover."""
    return (f'<mark class="ent {palette_class(kind)}" data-entity="{escape(kind)}" '
            f'title="{escape(_score_title(kind, score))}">{escape(piece)}'
            f'<span class="ent-label">{escape(kind)}</span></mark>')


@bp.app_template_global()
def highlight_entities(text: str | None, entities: Sequence[Mapping[str, Any]] | None) -> Markup:
    """``text`` with each entity (``{"entity_group", "score", "start", "end", ...}``, character offsets into the
    text) wrapped in a ``<mark>``. Entities are taken in order of their start; one that overlaps an earlier one, or
    whose offsets are not a non-empty range inside the text, is left out (the text stays whole)."""
    text = text or ""
    spans = []
    for entity in entities or ():
        try:
            start, end = int(entity["start"]), int(entity["end"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= start < end <= len(text):
            spans.append((start, end, str(entity.get("entity_group", "")), entity.get("score")))
    out: list[str] = []
    position = 0
    for start, end, kind, score in sorted(spans, key=lambda s: (s[0], s[1])):
        if start < position:
            continue
        out.append(str(escape(text[position:start])))
        out.append(_mark(text[start:end], kind, score))
        position = end
    out.append(str(escape(text[position:])))
    return Markup("".join(out))  # noqa: S704 - every piece escaped above


@bp.app_template_global()
def tagged_tokens(tokens: Sequence[str] | None, tags: Sequence[str] | None,
                  scores: Sequence[Any] | None = None) -> Markup:
    """A pre-tokenized sentence: each token, and under each token tagged other than ``O`` its tag (coloured by its
    entity type, or by the tag itself for plain tags) with the score on hover."""
    tags, scores = list(tags or ()), list(scores or ())
    out = []
    for i, token in enumerate(tokens or ()):
        tag = str(tags[i]) if i < len(tags) else OUTSIDE
        if tag == OUTSIDE:
            out.append(f'<span class="tok">{escape(token)}</span>')
            continue
        _, kind = split_tag(tag)
        score = scores[i] if i < len(scores) else None
        title = escape(_score_title(tag, score))
        out.append(f'<span class="tok tok-tagged {palette_class(kind or tag)}" title="{title}">'
                   f'{escape(token)}<span class="tok-tag">{escape(tag)}</span></span>')
    return Markup(" ".join(out))  # noqa: S704 - every piece escaped above


@bp.app_template_global()
def found_types(prediction: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``[(entity type, how many)]`` of one token prediction (the API's dict): its entities' groups, or the
    entities its tags decode to (plain tags: the tags but ``O``), in order of first appearance."""
    counts: dict[str, int] = {}
    if "entities" in prediction:
        kinds = [str(e.get("entity_group", "")) for e in prediction.get("entities") or ()]
    else:
        tags = [str(t) for t in prediction.get("tags") or ()]
        if detect_scheme([tags]) == PLAIN:
            kinds = [t for t in tags if t != OUTSIDE]
        else:
            kinds = [e.type for e in sorted(decode_entities(tags))]
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return list(counts.items())
