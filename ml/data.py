"""Rows -> training examples: column checks, label ids, the train/validation split, class weights. Pure: no torch.

1. **Rows -> examples** (:func:`prepare_examples`). Rows with empty text are skipped. Single-task: rows with an empty
   label are skipped. Multitask: an empty label becomes ``-100`` for that task (the row still trains the other
   tasks); rows with no label at all are skipped. Each task's labels are sorted (deterministic ids). Every task needs
   >= 2 classes and the data >= ``MIN_ROWS`` usable rows, else :class:`TrainingDataError` (message meant for the
   user).
2. **Split** (:func:`split_indices`). ``validation_split`` of the rows is held out, stratified on the (first) task's
   label when every class has >= 2 rows (sklearn ``train_test_split``), else a plain seeded random split.
   ``validation_split=0`` trains on everything and reports ``None`` for the validation metrics.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.schema import LABEL_MAX
from ml.config import IGNORE_INDEX, MIN_ROWS, TrainConfig, TrainingDataError


@dataclass
class Examples:
    """Usable rows: texts and, per task, label ids (``-100`` = no label for that task)."""

    texts: list[str]
    labels: dict[str, list[int]]
    tasks: dict[str, list[str]]
    skipped: dict[str, int] = field(default_factory=dict)


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def prepare_examples(rows: Sequence[Mapping[str, Any]], config: TrainConfig) -> Examples:
    """Validate the columns and turn CSV rows into :class:`Examples` (raises :class:`TrainingDataError`)."""
    multitask = config.family == "multitask"
    columns = list(config.label_columns or [])
    if not columns:
        raise TrainingDataError("choose the label column to train on")
    if len(set(columns)) != len(columns):
        raise TrainingDataError("a label column is listed twice")
    if not multitask and len(columns) != 1:
        raise TrainingDataError(
            f"family {config.family!r} trains on exactly one label column (got {len(columns)}); "
            "use the multitask family for several"
        )
    if not rows:
        raise TrainingDataError("the dataset has no rows")
    available = list(rows[0].keys())
    for column in [config.text_column, *columns]:
        if column not in available:
            raise TrainingDataError(
                f"column {column!r} not found; the dataset's columns are: {', '.join(map(str, available))}"
            )
    if config.text_column in columns:
        raise TrainingDataError(f"column {config.text_column!r} cannot be both the text and a label")

    texts: list[str] = []
    raw: list[list[str]] = []
    skipped = {"empty_text": 0, "no_label": 0}
    for row in rows:
        text = row.get(config.text_column)
        text = "" if text is None else str(text)
        if not text.strip():
            skipped["empty_text"] += 1
            continue
        labels = [_cell(row, c) for c in columns]
        if (not multitask and not labels[0]) or not any(labels):
            skipped["no_label"] += 1
            continue
        texts.append(text)
        raw.append(labels)

    if len(texts) < MIN_ROWS:
        raise TrainingDataError(
            f"need at least {MIN_ROWS} rows with text and a label to train; found {len(texts)} "
            f"({skipped['empty_text']} rows had empty text, {skipped['no_label']} had no label)"
        )
    tasks: dict[str, list[str]] = {}
    label_ids: dict[str, list[int]] = {}
    for j, column in enumerate(columns):
        values = sorted({labels[j] for labels in raw if labels[j]})
        too_long = [v for v in values if len(v) > LABEL_MAX]
        if too_long:  # the web refuses these at submission; a dataset stored before that check may still have them
            raise TrainingDataError(
                f"column {column!r} has labels longer than {LABEL_MAX} characters (e.g. {too_long[0][:60]!r}...): "
                "is it a text column?"
            )
        if len(values) < 2:
            found = f"only one label ({values[0]!r})" if values else "no labels"
            raise TrainingDataError(f"column {column!r} has {found}; a classifier needs at least 2 different labels")
        index = {label: i for i, label in enumerate(values)}
        tasks[column] = values
        label_ids[column] = [index[labels[j]] if labels[j] else IGNORE_INDEX for labels in raw]
    return Examples(texts=texts, labels=label_ids, tasks=tasks, skipped=skipped)


def split_indices(
    labels: Sequence[int], validation_split: float, seed: int
) -> tuple[list[int], list[int], bool]:
    """Seeded train/validation split of ``range(len(labels))``; stratified when possible.

    Returns ``(train, validation, stratified)``. Stratifies on ``labels`` (``-100`` counts as its own group)
    when every group has >= 2 rows and both parts can hold one row of every group.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    indices = list(range(n))
    if validation_split <= 0:
        return indices, [], False
    n_val = min(n - 2, max(1, round(n * validation_split)))
    counts: dict[int, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    stratify = min(counts.values()) >= 2 and n_val >= len(counts) and n - n_val >= len(counts)
    train, val = train_test_split(
        indices, test_size=n_val, random_state=seed, shuffle=True, stratify=list(labels) if stratify else None
    )
    return sorted(train), sorted(val), stratify


def balanced_class_weights(label_ids: Sequence[int], num_classes: int) -> list[float]:
    """sklearn's "balanced" weights ``n / (k * count_c)`` over labelled rows; 1.0 for a class with no rows."""
    counts = [0] * num_classes
    for y in label_ids:
        if y != IGNORE_INDEX:
            counts[y] += 1
    total = sum(counts)
    return [round(total / (num_classes * c), 6) if c else 1.0 for c in counts]


def resolve_class_weights(
    setting: None | str | Mapping[str, Sequence[float]] | Sequence[float],
    tasks: Mapping[str, Sequence[str]],
    train_labels: Mapping[str, Sequence[int]],
) -> dict[str, list[float]] | None:
    """``TrainConfig.class_weights`` -> ``{task: [w per label]}`` with ``"balanced"`` computed from the train split.

    ``"balanced"`` may also be given per task (``{"topic": "balanced"}``). Explicit weights must list one number
    per label in sorted label order (:class:`TrainingDataError` otherwise, naming the order).
    """
    if setting is None:
        return None
    if isinstance(setting, str):
        if setting != "balanced":
            raise TrainingDataError(
                f"class_weights must be 'balanced', a list of numbers or {{task: [...]}}, got {setting!r}"
            )
        setting = {task: "balanced" for task in tasks}
    elif not isinstance(setting, Mapping):
        if len(tasks) != 1:
            raise TrainingDataError("with several tasks give class_weights as {task: [weights]} or 'balanced'")
        setting = {next(iter(tasks)): setting}
    out: dict[str, list[float]] = {}
    for task, weights in setting.items():
        if task not in tasks:
            raise TrainingDataError(f"class_weights names unknown task {task!r}; tasks are: {', '.join(tasks)}")
        labels = tasks[task]
        if weights is None:
            continue
        if isinstance(weights, str):
            if weights != "balanced":
                raise TrainingDataError(f"class_weights for {task!r} must be 'balanced' or numbers, got {weights!r}")
            out[task] = balanced_class_weights(train_labels[task], len(labels))
            continue
        weights = list(weights)
        if len(weights) != len(labels):
            raise TrainingDataError(
                f"class_weights for {task!r} has {len(weights)} numbers but the data has {len(labels)} labels; "
                f"give one weight per label in this order: {', '.join(labels)}"
            )
        try:
            values = [float(w) for w in weights]
        except (TypeError, ValueError):
            raise TrainingDataError(f"class_weights for {task!r} must be numbers: {weights}") from None
        if any(not math.isfinite(w) or w < 0 for w in values) or not any(w > 0 for w in values):
            raise TrainingDataError(f"class_weights for {task!r} must be >= 0 and not all 0: {values}")
        out[task] = values
    return out or None
