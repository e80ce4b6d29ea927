"""Multiple choice in the training loop (``ml.loop``): what this task type gives the shared loop.

- **rows -> examples**: the dataset's layout (``core.task_types.multiple_choice.config_layout``: context, question,
  numbered choice columns or a list column, label as position or text), each row checked as the upload check does;
- **split by row** (``validation_split``, stratified by the right position when possible), or a separate
  validation dataset;
- **encode**: every (context [+ question], choice) pair (``ml.mc_data``); the loop batches *rows*, each (C, T) of
  pairs, labels (B,) positions (:class:`ml.mc_data.ChoiceBatches`);
- **score**: ``accuracy`` (the default early-stopping metric) and ``macro_f1`` over choice positions
  (``core.task_types.multiple_choice.choice_metrics``), plus ``per_position``.

The model's one task is ``choice``; its labels are the positions ``"0"`` ... up to the most choices a row has.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.datasets import DatasetError
from core.task_types.multiple_choice import NAME, TASK, Example, choice_metrics, config_layout, positions
from ml.config import MIN_ROWS, TrainingDataError, head_options
from ml.data import split_indices
from ml.mc_data import ChoiceBatches, encode_pairs
from ml.metrics import _r

METRIC_KEYS = ("accuracy", "macro_f1")  # of every history record and epoch


def read_examples(rows: Sequence[Mapping[str, Any]], config: Any) -> list[Example]:
    """Rows -> labelled :class:`Example` s; :class:`TrainingDataError` for a row the upload check would refuse."""
    if not rows:
        raise TrainingDataError("the dataset has no rows")
    try:
        layout = config_layout(list(rows[0]), config)
        return [layout.example(row, number) for number, row in enumerate(rows, start=1)]
    except DatasetError as error:
        raise TrainingDataError(error.message) from None


class ChoiceTask:
    """The multiple-choice task data of one training run (see the module docstring)."""

    task_type = NAME
    default_metric = "accuracy"
    metric_keys = METRIC_KEYS
    multi_label = False

    def __init__(self, rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None, config: Any):
        if getattr(config, "multi_label", False):
            raise TrainingDataError("multi_label does not apply to multiple choice (one right choice per row)")
        train = read_examples(rows, config)
        if len(train) < MIN_ROWS:
            raise TrainingDataError(f"need at least {MIN_ROWS} rows to train; found {len(train)}")
        self.config = config
        self.task = TASK
        if validation_rows is None:
            self.examples = train
            train_part, val_part, self.stratified = split_indices(
                [e.label for e in train], float(getattr(config, "validation_split", 0.0) or 0.0), int(config.seed))
            self.source = "split" if val_part else None
        else:
            held_out = read_examples(validation_rows, config)
            self.examples = train + held_out
            train_part, val_part, self.stratified = list(range(len(train))), \
                list(range(len(train), len(self.examples))), False
            self.source = "dataset" if val_part else None
        self.train_rows, self.val_rows = train_part, val_part
        self.tasks = {TASK: positions(max(len(e.choices) for e in self.examples))}
        self.validation_examples = len(val_part)
        self.skipped: dict[str, int] = {}

    # ---- what the loop asks for --------------------------------------------------------------------------

    def encode(self, tokenizer: Any, max_length: int, check_stop: Callable[[], None] | None = None) -> ChoiceBatches:
        """Every row's (context, choice) pairs, tokenized once."""
        pairs = encode_pairs(tokenizer, self.examples, max_length, check_stop)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return ChoiceBatches(pairs, [e.label for e in self.examples], pad_id)

    def train_labels(self, encoded: ChoiceBatches) -> dict[str, list[int]]:
        return {TASK: [encoded.labels[TASK][i] for i in self.train_rows]}

    def model_options(self, config: Any, class_weights: dict[str, list[float]] | None) -> dict[str, Any]:
        """``build_model`` options for the multiple-choice class of ``config.family`` (``ml.config.head_options``)."""
        return head_options(config, class_weights, NAME)

    def configure(self, model: Any) -> None:
        """Nothing beyond ``max_length`` (the loop's) for inference to repeat."""

    def score(self, evaluation: Mapping[str, Any], encoded: ChoiceBatches, rows: Sequence[int],
              thresholds: Any = None) -> dict[str, dict[str, Any]]:
        """``{"choice": metrics}`` of an ``ml.loop.evaluate`` result over validation rows ``rows``."""
        gold = [encoded.labels[TASK][i] for i in rows]
        metrics = choice_metrics(gold, list(evaluation["pred"][TASK]))
        out = {k: _r(metrics[k]) for k in METRIC_KEYS}
        out["per_position"] = {p: {k: _r(v) if isinstance(v, float) else v for k, v in values.items()}
                               for p, values in metrics["per_position"].items()}
        out["validation_examples"] = metrics["examples"]
        out["val_loss"] = _r(evaluation["task_loss"][TASK])
        return {TASK: out}

    def record_fields(self, per_task: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
        """The validation metrics of one history record (None each without validation)."""
        metrics = (per_task or {}).get(TASK, {})
        return {k: metrics.get(k) for k in METRIC_KEYS}

    def final_metrics(self, model: Any, best: Any, encoded: ChoiceBatches) -> dict[str, Any]:
        """The kept checkpoint's metrics (its evaluation's predictions); None each without validation."""
        if best.evaluation is None:
            metrics: dict[str, Any] = {k: None for k in METRIC_KEYS}
            metrics["per_position"] = {}
        else:
            metrics = dict(self.score(best.evaluation, encoded, self.val_rows)[TASK])
            metrics.pop("val_loss")
            metrics.pop("validation_examples")
        return {**metrics, "labels": list(self.tasks[TASK])}

    def summary(self) -> dict[str, Any]:
        """What the run trained on: rows per part, choices per row (min / max), where the choices came from."""
        counts = [len(e.choices) for e in self.examples]
        return {"task_type": NAME, "rows": {"train": len(self.train_rows), "validation": len(self.val_rows)},
                "choices": {"min": min(counts), "max": max(counts)}}
