"""Family name -> model class; which encoders a family may use; building a model around a pretrained encoder.

Import order inside the package (no cycles): ``base`` <- the family modules <- ``registry`` -> ``encoders``,
``convert`` (-> ``encoders``); ``io`` -> ``registry``. ``encoders`` knows no family.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import EncoderClassifier, encoder_type_error
from .bert import BertClassifier
from .bert_lstm import BertLSTMClassifier
from .convert import ensure_default_distilbert
from .distilbert import DistilBertClassifier
from .encoders import (
    default_cache_dir,
    default_encoder_path,
    is_default_encoder,
    is_local_encoder,
    load_encoder,
    load_encoder_config,
)
from .multiple_choice import FAMILIES as MULTIPLE_CHOICE_FAMILIES
from .multitask import MultiTaskClassifier
from .question_answering import FAMILIES as QA_FAMILIES
from .token_classification import FAMILIES as TOKEN_FAMILIES

TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
MULTIPLE_CHOICE = "multiple-choice"
QUESTION_ANSWERING = "question-answering"

# the classes of the text-classification task type (one label, or several, per text)
FAMILIES: dict[str, type[EncoderClassifier]] = {
    "bert": BertClassifier,
    "distilbert": DistilBertClassifier,
    "bert_lstm": BertLSTMClassifier,
    "multitask": MultiTaskClassifier,
}

# task type -> family -> class: a family is an encoder plus the way it feeds a head, the task type picks the head
TASK_FAMILIES: dict[str, dict[str, type[EncoderClassifier]]] = {
    TEXT_CLASSIFICATION: FAMILIES,
    TOKEN_CLASSIFICATION: TOKEN_FAMILIES,
    MULTIPLE_CHOICE: MULTIPLE_CHOICE_FAMILIES,
    QUESTION_ANSWERING: QA_FAMILIES,
}

COMMON_OPTIONS = EncoderClassifier.common_option_names


def task_families(task_type: str = TEXT_CLASSIFICATION) -> dict[str, type[EncoderClassifier]]:
    """The families of ``task_type`` (name -> class); ValueError naming the known task types otherwise."""
    try:
        return TASK_FAMILIES[task_type]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task type {task_type!r}; choose one of {', '.join(TASK_FAMILIES)}") from None


def model_class(family: str, task_type: str = TEXT_CLASSIFICATION) -> type[EncoderClassifier]:
    """The class of ``family`` for ``task_type``; ValueError naming the known families otherwise."""
    families = task_families(task_type)
    try:
        return families[family]
    except (KeyError, TypeError):
        where = "" if task_type == TEXT_CLASSIFICATION else f" for {task_type}"
        raise ValueError(f"unknown model family {family!r}{where}; choose one of {', '.join(families)}") from None


def family_options(family: str, task_type: str = TEXT_CLASSIFICATION) -> tuple[str, ...]:
    """Every option ``build_model`` accepts for ``family`` of ``task_type`` (common ones first)."""
    return COMMON_OPTIONS + model_class(family, task_type).option_names


def check_encoder_type(family: str, model_type: str | None, task_type: str = TEXT_CLASSIFICATION) -> None:
    """Raise a clear ValueError when ``family`` cannot use an encoder of ``model_type``.

    A BERT checkpoint given to ``distilbert`` is rejected (not silently converted) with a message pointing at
    :func:`models.convert.bert_to_distilbert`; a DistilBERT checkpoint given to ``bert`` likewise.
    """
    allowed = model_class(family, task_type).encoder_types
    if model_type not in allowed:
        raise ValueError(encoder_type_error(family, model_type, allowed))


def resolve_encoder(
    family: str, name: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
    task_type: str = TEXT_CLASSIFICATION,
) -> str:
    """Turn a user's encoder choice into a loadable local path or hub id, checking it suits ``family``.

    ``None``/``"default"`` -> the packaged MiniLM (for ``distilbert``: its exact DistilBERT conversion, built once
    into ``cache_dir``, default :func:`models.encoders.default_cache_dir`). Only the packaged default is converted
    automatically. Raises ``ValueError`` for an unknown encoder or an architecture the family cannot use.
    """
    model_class(family, task_type)  # validates the family name
    if is_default_encoder(name):
        if family == "distilbert":
            return str(ensure_default_distilbert(cache_dir if cache_dir is not None else default_cache_dir()))
        return default_encoder_path()
    name = str(name).strip()
    if is_local_encoder(name):
        name = str(Path(name).expanduser().resolve())
    config = load_encoder_config(name)
    check_encoder_type(family, getattr(config, "model_type", None), task_type)
    return name


def build_model(
    family: str,
    tasks: Mapping[str, Sequence[str]],
    encoder_path: str | os.PathLike,
    *,
    task_type: str = TEXT_CLASSIFICATION,
    **options: Any,
) -> EncoderClassifier:
    """A new ``family`` model of ``task_type`` on the pretrained encoder at ``encoder_path`` (local dir or hub id);
    heads random. ``task_type``: ``"text-classification"`` (logits (B, C)) or ``"token-classification"`` (logits
    (B, T, C), one tag set as the one task).

    ``options``: the common ones (``dropout``, ``class_weights`` (numbers, see
    :func:`models.base.normalize_class_weights`), ``freeze_encoder``, ``multi_label``, ``label_smoothing``) and the
    family's own (``pooling``; ``lstm_hidden``, ``bidirectional``; ``task_weights``).
    Raises ValueError for an unknown family/option or an encoder architecture the family cannot use.
    """
    cls = model_class(family, task_type)
    allowed = family_options(family, task_type)
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(
            f"family {family!r} has no option(s) {', '.join(sorted(unknown))}; "
            f"its options are {', '.join(allowed)}"
        )
    check_encoder_type(family, getattr(load_encoder_config(encoder_path), "model_type", None), task_type)
    encoder = load_encoder(encoder_path)
    if "pooling" in allowed and options.get("pooling") is None:
        missing = getattr(encoder, "bertqueue_missing_keys", [])
        if any(key.startswith("pooler.") for key in missing):
            options["pooling"] = "cls"  # the checkpoint has no trained pooler: don't pool through random weights
    return cls(encoder.config, tasks, encoder=encoder, **options)
