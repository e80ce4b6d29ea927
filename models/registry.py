"""Family name -> model class, and building a model around a pretrained encoder."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .base import EncoderClassifier
from .bert import BertClassifier
from .bert_lstm import BertLSTMClassifier
from .distilbert import DistilBertClassifier
from .multitask import MultiTaskClassifier

FAMILIES: dict[str, type[EncoderClassifier]] = {
    "bert": BertClassifier,
    "distilbert": DistilBertClassifier,
    "bert_lstm": BertLSTMClassifier,
    "multitask": MultiTaskClassifier,
}

COMMON_OPTIONS = ("dropout", "class_weights", "freeze_encoder")


def model_class(family: str) -> type[EncoderClassifier]:
    """The class of ``family``; ValueError naming the known families otherwise."""
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}") from None


def family_options(family: str) -> tuple[str, ...]:
    """Every option ``build_model`` accepts for ``family`` (common ones first)."""
    return COMMON_OPTIONS + model_class(family).option_names


def build_model(
    family: str,
    tasks: Mapping[str, Sequence[str]],
    encoder_path: str | os.PathLike,
    **options: Any,
) -> EncoderClassifier:
    """A new ``family`` model on the pretrained encoder at ``encoder_path`` (local dir or hub id); heads random.

    ``options``: ``dropout``, ``class_weights`` (numbers, see :func:`models.base.normalize_class_weights`),
    ``freeze_encoder`` and the family's own (``pooling``; ``lstm_hidden``, ``bidirectional``; ``task_weights``).
    Raises ValueError for an unknown family/option or an encoder architecture the family cannot use.
    """
    from .encoders import check_encoder_type, load_encoder, load_encoder_config

    cls = model_class(family)
    unknown = set(options) - set(family_options(family))
    if unknown:
        raise ValueError(
            f"family {family!r} has no option(s) {', '.join(sorted(unknown))}; "
            f"its options are {', '.join(family_options(family))}"
        )
    check_encoder_type(family, getattr(load_encoder_config(encoder_path), "model_type", None))
    encoder = load_encoder(encoder_path)
    if family in ("bert", "multitask") and options.get("pooling") is None:
        missing = getattr(encoder, "bertqueue_missing_keys", [])
        if any(key.startswith("pooler.") for key in missing):
            options["pooling"] = "cls"  # the checkpoint has no trained pooler: don't pool through random weights
    return cls(encoder.config, tasks, encoder=encoder, **options)
