"""The training run's settings and results, its errors, and the constants the ML modules share."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.options import TrainConfig, model_options

MIN_ROWS = 10  # usable (labelled, non-empty) rows needed to train at all
HEAD_LR_MULTIPLIER = 10.0  # default head_lr = HEAD_LR_MULTIPLIER * learning_rate
IGNORE_INDEX = -100
# padded tokens per training forward pass when the caller passes no budget (the worker passes MAX_TRAIN_BATCH_TOKENS,
# whose default this is: tests/ml/test_train_micro_batches.py checks that they agree)
DEFAULT_MAX_TRAIN_BATCH_TOKENS = 4096


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
    """The options ``build_model`` takes: the declared model options of the family (``core.options``) plus the
    class weights, resolved to numbers from the training labels."""
    return {**model_options(config), "class_weights": class_weights}


def head_options(config: TrainConfig, class_weights: dict[str, list[float]] | None, task_type: str) -> dict[str, Any]:
    """:func:`_family_options` for the class of ``config.family`` under ``task_type``: an option of the family's
    text-classification class that this head does not take (``pooling``) is dropped while unset, refused when set."""
    from models.registry import family_options

    allowed = set(family_options(config.family, task_type))
    options = {}
    for name, value in _family_options(config, class_weights).items():
        if name in allowed:
            options[name] = value
        elif value is not None:
            raise TrainingDataError(f"{name} does not apply to {task_type.replace('-', ' ')}")
    return options


def _check_config(config: TrainConfig, task_type: str = "text-classification") -> None:
    """The declarations and the model classes must agree on the task type and family (the config itself was
    validated by pydantic when it was built)."""
    from models.registry import task_families

    try:
        families = task_families(task_type)
    except ValueError as error:
        raise TrainingDataError(str(error)) from None
    if config.family not in families:
        where = "" if task_type == "text-classification" else f" for {task_type}"
        raise TrainingDataError(f"unknown model family {config.family!r}{where}; choose one of "
                                f"{', '.join(families)}")
