"""The training run's settings and results, its errors, and the constants the ML modules share."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_ROWS = 10  # usable (labelled, non-empty) rows needed to train at all
HEAD_LR_MULTIPLIER = 10.0  # default head_lr = HEAD_LR_MULTIPLIER * learning_rate
IGNORE_INDEX = -100


@dataclass
class TrainConfig:
    """Everything that defines a training run (see :mod:`ml.loop` for how each knob is used)."""

    text_column: str
    label_columns: list[str]  # exactly one for bert/distilbert/bert_lstm; >= 1 for multitask
    family: str = "bert"
    encoder: str | None = None  # None/"default" -> models.encoders default for the family
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 5e-5
    encoder_lr: float | None = None  # default: learning_rate
    head_lr: float | None = None  # default: HEAD_LR_MULTIPLIER * learning_rate
    max_length: int = 128
    validation_split: float = 0.1
    seed: int = 42
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    class_weights: None | str | dict[str, list[float]] | list[float] = None  # "balanced" allowed
    freeze_encoder: bool = False
    lstm_hidden: int = 256
    bidirectional: bool = True
    task_weights: dict[str, float] | None = None
    pooling: str | None = None


@dataclass
class TrainResult:
    """What :func:`ml.loop.train_classifier` returns: JSON-able metrics, the label sets, where the model was saved."""

    metrics: dict[str, Any]
    tasks: dict[str, list[str]]
    output_dir: Path


class TrainingDataError(ValueError):
    """The data (or a data-dependent setting) cannot be trained on; the message is shown to the user."""


class TrainingCancelled(Exception):
    """``should_stop()`` returned True: training stopped and nothing was saved."""


def _family_options(config: TrainConfig, class_weights: dict[str, list[float]] | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "dropout": config.dropout,
        "class_weights": class_weights,
        "freeze_encoder": config.freeze_encoder,
    }
    if config.family in ("bert", "multitask"):
        options["pooling"] = config.pooling
    if config.family == "bert_lstm":
        options["lstm_hidden"] = config.lstm_hidden
        options["bidirectional"] = config.bidirectional
    if config.family == "multitask":
        options["task_weights"] = config.task_weights
    return options


def _check_config(config: TrainConfig) -> None:
    from models.registry import FAMILIES

    if config.family not in FAMILIES:
        raise TrainingDataError(f"unknown model family {config.family!r}; choose one of {', '.join(FAMILIES)}")
    checks = [
        (config.epochs >= 1, "epochs must be >= 1"),
        (config.batch_size >= 1, "batch_size must be >= 1"),
        (config.learning_rate > 0, "learning_rate must be > 0"),
        (config.encoder_lr is None or config.encoder_lr > 0, "encoder_lr must be > 0"),
        (config.head_lr is None or config.head_lr > 0, "head_lr must be > 0"),
        (config.max_length >= 2, "max_length must be >= 2"),
        (0 <= config.validation_split < 1, "validation_split must be in [0, 1)"),
        (0 <= config.warmup_ratio <= 1, "warmup_ratio must be in [0, 1]"),
        (0 <= config.dropout < 1, "dropout must be in [0, 1)"),
        (config.weight_decay >= 0, "weight_decay must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingDataError(message)
