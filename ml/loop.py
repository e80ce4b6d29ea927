"""The training loop: rows of a CSV in, a saved classifier + metrics out. Pure: no database, no Celery.

Pipeline of :func:`train_classifier` (for text classification; a task type supplies steps 1-3 and the scoring of
step 5 through a *task data* object, :class:`TextTask` or ``ml.token_training.TokenTask``, and the rest is shared):

1. **Rows -> examples** and 2. **split**: :mod:`ml.data` (:func:`~ml.data.prepare_examples`,
   :func:`~ml.data.split_indices`). ``validation_rows`` (a separate labelled dataset) replaces the random split:
   they are prepared with the training rows' label sets, so label ids agree.
3. **Tokenize once** (sentence pairs as one ``[CLS] a [SEP] b [SEP]`` sequence with token type ids) and cut
   length-bucketed, dynamically padded batches: :mod:`ml.batches`.
4. **Optimise.** AdamW over the model's parameter groups (no decay on biases and norms; layer-wise learning-rate
   decay when ``layer_lr_decay`` < 1, :mod:`ml.optim`), linear warmup (``warmup_ratio`` of all steps) then linear
   decay to 0, gradient clipping at 1.0; mixed precision on CUDA (:class:`ml.precision.Precision`: bf16, or fp16
   with loss scaling; the ``AMP`` setting turns it off). A logical batch whose padded tokens (rows x longest row)
   exceed ``max_batch_tokens`` (``MAX_TRAIN_BATCH_TOKENS``) runs as micro-batches under that budget whose gradients are
   accumulated before the one optimizer step (:func:`train_step`): memory is bounded by the budget, not by
   ``batch_size`` x ``max_length``, and the gradient is the unsplit batch's. A pass that runs the device out of
   memory halves that budget and is redone (:class:`TokenBudget`): a job fails for memory only when one row alone
   does not fit. Steps, the ETA and early stopping count logical batches; the learning-rate schedule counts the
   optimizer's steps (fp16's scaler skips a step whose gradients overflowed, and a batch whose fp16 loss overflowed
   is skipped, up to ``MAX_OVERFLOWED_STEPS`` in a row). Learning rates:
   ``encoder_lr`` defaults to ``learning_rate``; ``head_lr`` defaults to ``HEAD_LR_MULTIPLIER`` (10) x
   ``learning_rate`` -- the heads start from random weights (and the LSTM head from scratch), so they need larger
   steps than the pretrained encoder.
5. **Evaluate** on the validation rows (in batches under the same token budget) at the end of every epoch, or
   every ``eval_steps`` steps (and after the last step): loss, accuracy, macro-F1 (sklearn, :mod:`ml.metrics`;
   multi-label: sigmoid probabilities scored by :func:`ml.multilabel.multilabel_metrics` at 0.5). Each evaluation appends a record to the *history*.
6. **Keep the best.** The evaluation with the best ``metric`` (macro-F1 by default; ``val_loss`` lower is better;
   ties keep the earlier one) has its weights copied to CPU memory; after ``early_stopping_patience``
   evaluations without improvement training stops. The best weights are restored before saving, and the reported
   metrics are theirs. A multi-label model then gets one decision threshold per label, tuned on the validation
   rows (:func:`ml.multilabel.tune_thresholds`); its final metrics decide each row with thresholds tuned on the
   other half of those rows (:func:`ml.multilabel.cross_fitted_thresholds`), so they do not flatter them.
7. **Save** the model with :func:`models.io.save_model` into ``output_dir``.

``progress(fraction, info)`` is called at least every ``PROGRESS_INTERVAL_S`` seconds and after every evaluation
(then ``info`` carries the ``history`` so far); ``info["eta_seconds"]`` estimates the time left (remaining steps
and evaluations at the measured speed). ``should_stop()`` must be cheap (it reads a flag): it is polled in every
phase -- before loading the encoder, before each tokenizer chunk (before the model is built), after every training
and evaluation step, and before saving. When it returns True, :class:`TrainingCancelled` is raised and nothing is
written.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.batches import Encoded, encoder_max_positions, length_bucketed_batches, tokenize
from ml.config import (
    DEFAULT_MAX_TRAIN_BATCH_TOKENS,
    HEAD_LR_MULTIPLIER,
    IGNORE_INDEX,
    TrainConfig,
    TrainingCancelled,
    TrainingDataError,
    TrainResult,
    _check_config,
    _family_options,
)
from ml.batching import OOM_RETRY_WAIT_S, OOM_ROW_RETRIES, token_budget_batches
from ml.device import is_out_of_memory, release_cached_memory
from ml.data import Examples, prepare_examples, resolve_class_weights, split_indices
from ml.metrics import _mean, _r, is_better, metric_value, task_metrics
from ml.optim import parameter_groups
from ml.precision import Precision

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 2.0  # progress() cadence (should_stop() is polled at every step)
MAX_GRAD_NORM = 1.0
# Before the first evaluation its cost is guessed: a forward pass costs about a third of a training step
# (forward + backward + optimizer) per row.
EVAL_COST_RATIO = 1 / 3
DEFAULT_THRESHOLD = 0.5  # multi-label decisions during training, before the thresholds are tuned


class _Heartbeat:
    """Rate-limits progress() to every PROGRESS_INTERVAL_S seconds; polls should_stop() at every tick."""

    def __init__(self, progress: Callable[[float, dict], None] | None, should_stop: Callable[[], bool] | None):
        self.progress, self.should_stop = progress, should_stop
        self.last = float("-inf")

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled("training was cancelled")

    def tick(self, fraction: float, info: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            if self.progress is not None:
                self.progress(min(1.0, max(0.0, fraction)), info)
        self.check_stop()


class _Clock:
    """Measured time per training step and per evaluation -> the estimated seconds left."""

    def __init__(self, total_steps: int, eval_every: int, batch_size: int, val_rows: int) -> None:
        self.total_steps, self.eval_every = total_steps, eval_every
        self.batch_size, self.val_rows = batch_size, val_rows
        self.step_seconds = self.eval_seconds = 0.0
        self.steps = self.evaluations = 0

    def is_eval_step(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total_steps

    def evaluations_left(self, step: int) -> int:
        """Evaluations after ``step``: every ``eval_every`` steps, plus one after the last step if it is not one."""
        if step >= self.total_steps:
            return 0
        extra = 1 if self.total_steps % self.eval_every else 0
        return self.total_steps // self.eval_every - step // self.eval_every + extra

    def eta_seconds(self, step: int) -> int | None:
        if not self.steps:
            return None
        per_step = self.step_seconds / self.steps
        if self.evaluations:
            per_eval = self.eval_seconds / self.evaluations
        else:
            per_eval = per_step / self.batch_size * self.val_rows * EVAL_COST_RATIO
        left = (self.total_steps - step) * per_step + (self.evaluations_left(step) * per_eval if self.val_rows else 0)
        return max(0, round(left))


@dataclass
class _Data:
    """The training and validation rows, encoded together (validation rows follow the training rows when they
    come from a separate dataset)."""

    texts: list[str]
    pairs: list[str] | None
    labels: dict[str, list[Any]]
    tasks: dict[str, list[str]]
    multi_label: bool
    train_rows: list[int]
    val_rows: list[int]
    stratified: bool
    source: str | None  # "split", "dataset" or None (no validation)
    skipped: dict[str, int]


def _prepare_data(rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None,
                  config: TrainConfig) -> _Data:
    examples: Examples = prepare_examples(rows, config)
    tasks = examples.tasks
    first = next(iter(tasks))
    if validation_rows is None:
        train, val, stratified = split_indices(examples.labels[first], config.validation_split, config.seed)
        return _Data(examples.texts, examples.pairs, examples.labels, tasks, examples.multi_label, train, val,
                     stratified, "split" if val else None, examples.skipped)
    held_out = prepare_examples(validation_rows, config, tasks=tasks)
    n = len(examples.texts)
    pairs = examples.pairs + held_out.pairs if examples.pairs is not None and held_out.pairs is not None else None
    return _Data(examples.texts + held_out.texts, pairs,
                 {t: list(examples.labels[t]) + list(held_out.labels[t]) for t in tasks}, tasks,
                 examples.multi_label, list(range(n)), list(range(n, n + len(held_out.texts))), False, "dataset",
                 examples.skipped)


class TextTask:
    """The text-classification task data of one training run: one row = one text (or pair), labels (B,) ids per
    task, or multi-hot (B, C) rows; scored per task by :func:`score`.

    The loop asks a task data object for everything that differs between task types (``ml.token_training.TokenTask``
    is the other one): ``tasks``, ``source`` / ``stratified`` / ``skipped`` / ``validation_examples``,
    ``encode(tokenizer, max_length, check_stop) -> Encoded`` (which sets ``train_rows`` / ``val_rows``, indices of
    the encoded rows), ``train_labels(encoded)`` (what "balanced" class weights count), ``model_options(config,
    class_weights)`` and ``configure(model)`` (building the model), ``score(evaluation, encoded, rows)``,
    ``record_fields(per_task)`` (the metrics of a history record; ``metric_keys`` name them),
    ``final_metrics(model, best, encoded)`` and ``summary()`` (what is reported), ``default_metric``.
    """

    task_type = "text-classification"
    default_metric = "macro_f1"
    metric_keys = ("accuracy", "macro_f1")

    def __init__(self, rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None,
                 config: TrainConfig):
        self.data = _prepare_data(rows, validation_rows, config)
        self.tasks, self.multi_label = self.data.tasks, self.data.multi_label
        self.source, self.stratified, self.skipped = self.data.source, self.data.stratified, self.data.skipped
        self.validation_examples = len(self.data.val_rows)
        self.train_rows: list[int] = []
        self.val_rows: list[int] = []
        self.multitask = False

    def encode(self, tokenizer: Any, max_length: int, check_stop: Callable[[], None] | None = None) -> Encoded:
        data = self.data
        input_ids, token_type_ids = tokenize(tokenizer, data.texts, max_length, check_stop, pairs=data.pairs)
        self.train_rows, self.val_rows = data.train_rows, data.val_rows
        return Encoded(input_ids, data.labels, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                       token_type_ids, data.multi_label)

    def train_labels(self, encoded: Encoded) -> dict[str, list[Any]]:
        return {t: [y[i] for i in self.train_rows] for t, y in encoded.labels.items()}

    def model_options(self, config: TrainConfig, class_weights: dict[str, list[float]] | None) -> dict[str, Any]:
        return _family_options(config, class_weights)

    def configure(self, model: Any) -> None:
        self.multitask = model.is_multitask

    def score(self, evaluation: Mapping[str, Any], encoded: Encoded, rows: Sequence[int],
              thresholds: Any = None) -> dict[str, dict[str, Any]]:
        return score(evaluation, encoded, rows, self.tasks, thresholds)

    def record_fields(self, per_task: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
        return _record_fields(per_task, list(self.tasks), self.multitask, self.multi_label)

    def final_metrics(self, model: Any, best: "_Best", encoded: Encoded) -> dict[str, Any]:
        return _final_metrics(model, best, encoded, self.val_rows, self.tasks, self.multi_label)

    def summary(self) -> dict[str, Any]:
        return {}


# the task data class of every other task type ("module:Class", imported when a run needs it)
TASK_DATA = {
    "token-classification": "ml.token_training:TokenTask",
    "question-answering": "ml.qa_training:QATask",
    "multiple-choice": "ml.mc_training:ChoiceTask",
}


def task_data(rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None,
              config: TrainConfig) -> Any:
    """The task data object for ``config``'s task type (``getattr``: configs from before task types have none)."""
    task_type = getattr(config, "task_type", None) or TextTask.task_type
    if task_type == TextTask.task_type:
        return TextTask(rows, validation_rows, config)
    if task_type not in TASK_DATA:
        raise TrainingDataError(f"unknown task type {task_type!r}")
    module, name = TASK_DATA[task_type].split(":")
    return getattr(importlib.import_module(module), name)(rows, validation_rows, config)


def _metric(config: TrainConfig, task: Any) -> str:
    """The metric that picks the best checkpoint: the task type's default when the config's is unset (None) or
    ``TrainConfig``'s declared default (``macro_f1``, text classification's: a request is dumped and re-validated
    on its way to the worker, so "left at the default" cannot be told from "chosen"); else the config's. Token
    classification reads ``micro_f1`` as its ``f1``."""
    metric = getattr(config, "metric", None)
    if metric is None or metric == TrainConfig.model_fields["metric"].default:
        return task.default_metric
    if metric == "micro_f1" and "f1" in task.metric_keys:
        return "f1"
    return metric


def _config_dict(config: Any) -> dict[str, Any]:
    """The training config as JSON-able data (a pydantic model, or any object with attributes)."""
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def evaluate(model: Any, data: Encoded, rows: Sequence[int], device: str, batch_size: int,
             heartbeat: _Heartbeat | None = None, fraction: float = 0.0,
             info: dict[str, Any] | None = None, max_tokens: int | None = None,
             precision: Precision | None = None) -> dict[str, Any]:
    """Loss and predictions on ``rows``, in batches of at most ``batch_size`` rows and ``max_tokens`` padded
    tokens (rows x longest row; None: no token limit), forward passes under ``precision``'s autocast (None: fp32).

    Returns ``{"loss", "task_loss": {task: ...}, "pred": {task: [label id per row]}}``; for a multi-label model
    ``"probs": {task: [[sigmoid probability per label] per row]}`` instead of ``"pred"``.
    """
    import torch

    model.eval()
    tasks = list(data.labels)
    outputs: dict[str, dict[int, Any]] = {t: {} for t in tasks}
    loss_sum, task_loss_sum = 0.0, {t: 0.0 for t in tasks}
    task_count = {t: 0 for t in tasks}
    autocast = precision.autocast() if precision is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for chunk in evaluation_batches(data, rows, max_tokens, batch_size):
            inputs = data.model_inputs(data.batch(chunk), device)
            out = model(**inputs)
            logits = out.logits if isinstance(out.logits, dict) else {tasks[0]: out.logits}
            loss_sum += float(out.loss) * len(chunk)
            for task, task_logits in logits.items():
                y = inputs["labels"][task]
                n = len(chunk) if data.multi_label else int((y != IGNORE_INDEX).sum())  # multi-label: every row
                if n:
                    task_loss_sum[task] += float(model.task_loss(task, task_logits, y)) * n
                    task_count[task] += n
                for i, value in zip(chunk, data.predictions(task_logits, chunk)):
                    outputs[task][i] = value
            if heartbeat is not None:
                heartbeat.tick(fraction, {**(info or {}), "phase": "evaluate"})
    return {
        "loss": loss_sum / max(1, len(rows)),
        "task_loss": {t: (task_loss_sum[t] / task_count[t] if task_count[t] else None) for t in tasks},
        ("probs" if data.multi_label else "pred"): {t: [outputs[t][i] for i in rows] for t in tasks},
    }


def evaluation_batches(data: Encoded, rows: Sequence[int], max_tokens: int | None,
                       batch_size: int) -> list[list[int]]:
    """How :func:`evaluate` cuts ``rows``: longest first (``token_budget_batches`` sizes each batch by its first
    row), at most ``batch_size`` rows and ``max_tokens`` padded tokens (None: no token limit) a batch."""
    order = sorted(rows, key=lambda i: len(data.input_ids[i]), reverse=True)
    lengths = {i: len(data.input_ids[i]) for i in order}
    return token_budget_batches(order, lengths, max_tokens or math.inf, batch_size)


def micro_batches(data: Encoded, rows: Sequence[int], max_tokens: int) -> list[list[int]]:
    """``rows`` (one logical batch) as is when its padded tokens fit ``max_tokens``, else cut longest first into
    micro-batches of at most ``max_tokens`` padded tokens (one row alone may exceed it: it cannot be split)."""
    lengths = {i: len(data.input_ids[i]) for i in rows}
    if len(rows) * max(lengths.values()) <= max_tokens:
        return [list(rows)]
    order = sorted(rows, key=lengths.__getitem__, reverse=True)
    return token_budget_batches(order, lengths, max_tokens, len(order))


MAX_OVERFLOWED_STEPS = 3  # fp16 batches in a row whose loss overflowed before the training counts as diverged


def _check_overflow(precision: Precision, in_a_row: int, loss: float, epoch: int, step: int) -> None:
    """A batch's loss is not finite: under fp16 (a forward pass overflowed its range, which a rare batch can do)
    it is skipped, up to ``MAX_OVERFLOWED_STEPS`` in a row; otherwise (fp32 and bf16 have fp32's range) the training
    diverged: RuntimeError."""
    if precision.scaler is None or in_a_row > MAX_OVERFLOWED_STEPS:
        raise RuntimeError(f"training diverged at epoch {epoch}, step {step} (loss {loss}); try a lower learning rate")
    log.warning("step %d: the loss overflowed fp16 (%s); the batch is skipped", step, loss)


class TokenBudget:
    """The padded tokens per forward pass of one training run (``max_batch_tokens``), halved whenever a pass runs the
    device out of memory: the step (or the evaluation) that failed is redone in smaller micro-batches instead of
    failing the job, with the same gradient (:func:`train_step`'s accumulated gradient is the unsplit batch's; with
    dropout, other random draws). It stays halved for the rest of the run: the batches that ran out once would run
    out again. Once every pass is a single row, the work is retried ``ROW_RETRIES`` times after a growing pause (the
    memory may be held for a moment by the classification worker on the same GPU) before the error fails the job
    (the worker says what to change)."""

    ROW_RETRIES = OOM_ROW_RETRIES  # as serving's engine retries a row (ml.batching)
    RETRY_WAIT_S = OOM_RETRY_WAIT_S

    def __init__(self, tokens: int) -> None:
        if tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1")
        self.tokens, self.halvings = tokens, 0

    def run(self, attempt: Callable[[int], Any], chunks: Callable[[int], list[list[int]]],
            lengths: Callable[[int], int], undo: Callable[[], None] = lambda: None) -> Any:
        """``attempt(tokens)`` at the current budget; after an out-of-memory error: ``undo()`` what the failed
        attempt left (a step's partial gradients), free the cached device memory, and attempt again -- with the
        budget halved below the largest chunk of several rows that the work's ``chunks`` make at this budget
        (``lengths``: a row's tokens), or, when every chunk is one row, after a pause, ``ROW_RETRIES`` times."""
        row_retries = 0
        while True:
            tokens = self.tokens
            try:
                return attempt(tokens)
            except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is retried; the rest propagate
                if not is_out_of_memory(exc):
                    raise
                largest = max((len(c) * max(map(lengths, c)) for c in chunks(tokens) if len(c) > 1), default=0)
                if largest == 0 and row_retries >= self.ROW_RETRIES:
                    raise
            # here, past the except block, the error and its traceback (which hold the pass's tensors) are freed
            undo()
            release_cached_memory()
            if largest:
                self.tokens, self.halvings = max(1, min(tokens, largest) // 2), self.halvings + 1
                log.warning("the device ran out of memory at %d padded tokens per pass: retrying at %d", tokens,
                            self.tokens)
            else:
                time.sleep(self.RETRY_WAIT_S * 2 ** row_retries)
                row_retries += 1
                log.warning("the device ran out of memory with one row per pass: retry %d of %d", row_retries,
                            self.ROW_RETRIES)


def fitted_train_step(model: Any, data: Encoded, rows: Sequence[int], device: str, budget: TokenBudget,
                      precision: Precision | None = None, optimizer: Any = None) -> float:
    """:func:`train_step` under ``budget``, redone in smaller micro-batches after an out-of-memory error (the
    partial gradients are cleared first: ``optimizer.zero_grad``, else each parameter's)."""
    def clear() -> None:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    return budget.run(lambda tokens: train_step(model, data, rows, device, tokens, precision),
                      lambda tokens: micro_batches(data, rows, tokens), lambda i: len(data.input_ids[i]), clear)


def fitted_evaluate(model: Any, data: Encoded, rows: Sequence[int], device: str, batch_size: int,
                    budget: TokenBudget, **options: Any) -> dict[str, Any]:
    """:func:`evaluate` in batches under ``budget``, redone in smaller batches after an out-of-memory error."""
    return budget.run(lambda tokens: evaluate(model, data, rows, device, batch_size, max_tokens=tokens, **options),
                      lambda tokens: evaluation_batches(data, rows, tokens, batch_size),
                      lambda i: len(data.input_ids[i]))


def train_step(model: Any, data: Encoded, rows: Sequence[int], device: str, max_tokens: int,
               precision: Precision | None = None) -> float:
    """Forward and backward one logical batch (the optimizer step is the caller's); returns its loss.

    Forward passes and losses run under ``precision``'s autocast, backward through its loss scaler (None: fp32).

    A batch over ``max_tokens`` padded tokens runs as :func:`micro_batches` whose gradients accumulate. Every loss
    here is a mean -- over labelled rows (class-weighted), or rows x labels for multi-label, per task, and
    multitask sums the tasks' weighted means -- so each micro-batch's task loss is scaled by its share of the whole
    batch's denominator (``model.loss_denominator``): the summed gradients and losses are then the unsplit
    batch's, whatever the class weights, missing multitask labels or label counts.
    """
    precision = precision if precision is not None else Precision(device)
    chunks = micro_batches(data, rows, max_tokens)
    if len(chunks) == 1:
        with precision.autocast():
            out = model(**data.model_inputs(data.batch(chunks[0]), device))
        precision.backward(out.loss)
        return float(out.loss.detach())
    tasks = list(data.labels)
    batches = [data.batch(chunk) for chunk in chunks]  # token ids only: small next to the activations
    parts = [{t: model.loss_denominator(t, batch["labels"][t]) for t in tasks} for batch in batches]
    totals = {t: sum(part[t] for part in parts) for t in tasks}
    loss_sum = 0.0
    for batch, part in zip(batches, parts):
        inputs = data.model_inputs(batch, device)
        labels = inputs.pop("labels")
        scale = {t: part[t] / totals[t] if totals[t] else 0.0 for t in tasks}
        with precision.autocast():
            logits = model(**inputs).logits
            logits = logits if isinstance(logits, dict) else {tasks[0]: logits}
            loss = model.compute_loss(logits, labels, task_scale=scale)
        precision.backward(loss)
        loss_sum += float(loss.detach())
    return loss_sum


def score(evaluation: Mapping[str, Any], data: Encoded, rows: Sequence[int], tasks: Mapping[str, Sequence[str]],
          thresholds: Any = None) -> dict[str, dict[str, Any]]:
    """``{task: metrics}`` of an :func:`evaluate` result: :func:`ml.metrics.task_metrics` (single-label) or
    :func:`ml.multilabel.multilabel_metrics` at ``thresholds`` (per label, or per row and label; default 0.5)."""
    out = {}
    for task, labels in tasks.items():
        truth = [data.labels[task][i] for i in rows]
        if data.multi_label:
            from ml.multilabel import multilabel_metrics

            out[task] = multilabel_metrics(truth, evaluation["probs"][task], labels,
                                           thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * len(labels))
        else:
            out[task] = task_metrics(truth, evaluation["pred"][task], labels)
        out[task]["val_loss"] = _r(evaluation["task_loss"][task])
    return out


def _history_record(step: int, epoch: float, train_loss: float | None, evaluation: Mapping[str, Any] | None,
                    fields: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of ``metrics.history``: ``{"step", "epoch", "train_loss", "val_loss"}`` plus the task type's
    validation ``fields`` (``TextTask.record_fields``, ``TokenTask.record_fields``)."""
    return {
        "step": step,
        "epoch": int(epoch) if float(epoch).is_integer() else round(epoch, 4),
        "train_loss": _r(train_loss),
        "val_loss": _r(evaluation["loss"]) if evaluation is not None else None,
        **fields,
    }


def _record_fields(per_task: Mapping[str, Mapping[str, Any]] | None, tasks: Sequence[str], multitask: bool,
                   multi_label: bool) -> dict[str, Any]:
    """Text classification's part of a history record: ``{"accuracy", "macro_f1"}`` (+ ``micro_f1`` for
    multi-label, + ``tasks`` for multitask); None each without validation."""
    per_task = per_task or {t: {} for t in tasks}
    first = per_task[tasks[0]]
    record: dict[str, Any] = {}
    if multitask:
        record["accuracy"] = _mean([m.get("accuracy") for m in per_task.values()])
        record["macro_f1"] = _mean([m.get("macro_f1") for m in per_task.values()])
        record["tasks"] = {t: {k: m.get(k) for k in ("accuracy", "macro_f1", "val_loss")} for t, m in per_task.items()}
    else:
        record["accuracy"], record["macro_f1"] = first.get("accuracy"), first.get("macro_f1")
        if multi_label:
            record["micro_f1"] = first.get("micro_f1")
    return record


class _Best:
    """The best evaluation so far for ``metric``: its step, record, predictions and a CPU copy of its weights."""

    def __init__(self, metric: str, patience: int | None) -> None:
        self.metric, self.patience = metric, patience
        self.value: float | None = None
        self.step: int | None = None
        self.record: dict[str, Any] | None = None
        self.evaluation: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.stale = 0  # evaluations since the last improvement

    def update(self, model: Any, step: int, record: dict[str, Any], evaluation: dict[str, Any] | None) -> bool:
        """Record an evaluation; True when training should stop early (patience exhausted)."""
        value = metric_value(record, self.metric)
        if evaluation is None or is_better(value, self.value, self.metric):
            self.value, self.step, self.record, self.evaluation, self.stale = value, step, record, evaluation, 0
            if evaluation is not None:  # without validation data the final weights are the ones kept
                self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience


def train_classifier(
    rows: list[dict[str, Any]],
    config: TrainConfig,
    output_dir: Path,
    *,
    validation_rows: list[dict[str, Any]] | None = None,
    device: str = "cpu",
    encoder_cache_dir: Path | None = None,
    progress: Callable[[float, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_batch_tokens: int | None = None,
    data_report: Mapping[str, Any] | None = None,
    amp: str = "auto",
) -> TrainResult:
    """Train ``config.family`` on ``rows`` and save the best checkpoint to ``output_dir`` (see the module docstring).

    ``validation_rows``: a separate labelled dataset to evaluate on (replaces the ``validation_split`` of ``rows``).
    ``device``: ``cpu``, ``cuda[:N]`` or ``auto`` (see :func:`ml.device.resolve_device`).
    ``encoder_cache_dir``: where the converted default DistilBERT encoder is cached (default
    :func:`models.encoders.default_cache_dir`).
    ``max_batch_tokens``: padded tokens per forward pass, in training (gradient accumulation over micro-batches)
    and evaluation; the worker passes ``MAX_TRAIN_BATCH_TOKENS``; default ``ml.config.DEFAULT_MAX_TRAIN_BATCH_TOKENS``
    (that setting's default).
    ``amp``: ``auto`` (mixed precision on CUDA: bf16, or fp16 with loss scaling; fp32 on the CPU) or ``off`` (fp32
    everywhere); see :mod:`ml.precision`. The weights, the best checkpoint and the saved files are fp32 either way.
    ``data_report``: counts from reading the data that the metrics must carry, recorded as
    ``metrics["data_report"]`` together with the task data's own (``summary()["data_report"]``: a token task's
    character spans snapped to word boundaries or dropped).

    The task type is ``getattr(config, "task_type", "text-classification")``; a task data object (:class:`TextTask`,
    ``ml.token_training.TokenTask``) supplies what differs (see :class:`TextTask`), the loop is shared.

    Metrics (JSON-able; ``accuracy``, ``macro_f1``, ``val_loss``, ``per_class``, ``confusion_matrix`` are those of
    the best checkpoint on the validation rows, None without validation)::

        {"accuracy", "macro_f1", "val_loss",
         "history": [{"step", "epoch", "train_loss", "val_loss", "accuracy", "macro_f1"}],  # one per evaluation
         "best_step", "stopped_early", "metric", "steps", "total_steps",
         "epochs": [{"epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds"}],  # last evaluation of
                                                                                                # each epoch
         "train_examples", "validation_examples", "validation_source",  # "split" | "dataset" | None
         "train_seconds",                                  # wall time of the step loop incl. evaluation
         "examples_per_second",                            # training examples / seconds spent in training steps
         "labels": [...], "per_class": {label: {"precision", "recall", "f1", "support"}},
         "confusion_matrix": {"labels": [...], "matrix": [[...]]},  # rows = true label
         "family", "device", "amp", "max_length", "encoder_lr", "head_lr", "class_weights", "stratified_split",
         "skipped_rows",
         "train_batch_tokens", "out_of_memory_halvings"}  # the padded tokens per pass it ended with (TokenBudget)

    Multitask: ``"tasks": {task: {"accuracy", "macro_f1", "val_loss", "labels", "per_class", "confusion_matrix",
    "validation_examples"}}``; history and epochs entries carry ``"tasks": {task: {"accuracy", "macro_f1",
    "val_loss"}}``; the top-level ``accuracy`` / ``macro_f1`` are the means over tasks, ``per_class`` and
    ``confusion_matrix`` the first task's, and ``labels`` is ``{task: [...]}``.
    Multi-label: ``accuracy`` is the subset accuracy; also ``micro_f1``, ``subset_accuracy`` and ``thresholds``
    (one per label, tuned on every validation row; the final metrics use 2-fold cross-fitted ones, the history
    uses 0.5); no confusion matrix.

    Token classification (``ml.token_training``): the rows are windows of sentences; the metrics are ``f1``,
    ``precision``, ``recall`` (entity-level micro, or per word for plain tags), ``accuracy`` (token accuracy),
    ``macro_f1``, ``per_type``, plus ``labels`` (the tag set), ``scheme``, ``sentences``, ``tokens``, ``windows``,
    ``stride``, ``task_type``; ``metric`` defaults to ``f1``; history and epochs records carry those metrics.

    Multiple choice (``ml.mc_training``): a row is its (context, choice) pairs; the metrics are ``accuracy`` (the
    default ``metric``) and ``macro_f1`` over choice positions, ``per_position``, plus ``labels`` (the positions),
    ``rows``, ``choices`` (min / max per row), ``task_type``.

    Raises :class:`TrainingDataError` for unusable data/settings and :class:`TrainingCancelled` when stopped.
    """
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    from ml.device import configure_torch_threads, resolve_device
    from models.encoders import load_encoder_config, load_tokenizer
    from models.io import save_model
    from models.registry import build_model, resolve_encoder

    started = time.monotonic()
    task_type = getattr(config, "task_type", None) or TextTask.task_type
    _check_config(config, task_type)
    budget = TokenBudget(max_batch_tokens if max_batch_tokens is not None else DEFAULT_MAX_TRAIN_BATCH_TOKENS)
    heartbeat = _Heartbeat(progress, should_stop)
    heartbeat.check_stop()
    device = resolve_device(device)
    if device == "cpu":
        configure_torch_threads()
    precision = Precision.for_device(device, amp)

    data = task_data(rows, validation_rows, config)
    metric = _metric(config, data)
    tasks = data.tasks
    if config.early_stopping_patience is not None and not data.validation_examples:
        raise TrainingDataError("early_stopping_patience needs validation data: a validation_split > 0 or a "
                                "validation dataset")
    if config.task_weights is not None:
        unknown = set(config.task_weights) - set(tasks)
        if unknown:
            raise TrainingDataError(f"task_weights names unknown tasks: {', '.join(sorted(unknown))}")

    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)

    heartbeat.tick(0.0, {"phase": "loading"}, force=True)
    try:
        encoder_path = resolve_encoder(config.family, config.encoder, encoder_cache_dir, task_type=task_type)
    except ValueError as error:
        raise TrainingDataError(str(error)) from error
    tokenizer = load_tokenizer(encoder_path)
    max_length = min(config.max_length, encoder_max_positions(tokenizer, load_encoder_config(encoder_path)))
    # encoded before the model is built: token classification's "balanced" weights count the labelled positions
    encoded = data.encode(tokenizer, max_length, heartbeat.check_stop)
    train_rows, val_rows = data.train_rows, data.val_rows
    train_labels = data.train_labels(encoded)
    if not data.multi_label:  # a multi-label row without any label is an all-zero target, still a lesson
        for task in tasks:
            if all(y == IGNORE_INDEX for y in train_labels[task]):
                raise TrainingDataError(f"no training row has a label for {task!r}")
    class_weights = resolve_class_weights(config.class_weights, tasks, train_labels)
    model = build_model(config.family, tasks, encoder_path, task_type=task_type,
                        **data.model_options(config, class_weights))
    model.max_length = max_length
    data.configure(model)
    model.to(device)
    train_lengths = [len(encoded.input_ids[i]) for i in train_rows]

    encoder_lr = config.encoder_lr if config.encoder_lr is not None else config.learning_rate
    head_lr = config.head_lr if config.head_lr is not None else config.learning_rate * HEAD_LR_MULTIPLIER
    optimizer = torch.optim.AdamW(
        parameter_groups(model, encoder_lr, head_lr, config.weight_decay, config.layer_lr_decay))
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    rng = random.Random(config.seed)
    eval_batch = max(32, config.batch_size * 2)
    clock = _Clock(total_steps, config.eval_steps or steps_per_epoch, config.batch_size, len(val_rows))
    best = _Best(metric, config.early_stopping_patience)

    history: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    step, seen, stopped_early, overflows = 0, 0, False, 0
    since_sum, since_n = 0.0, 0  # training loss since the previous evaluation (row-weighted)
    loop_started = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        epoch_started, epoch_sum, epoch_n, epoch_first_step = time.monotonic(), 0.0, 0, step + 1
        model.train()
        for batch_positions in length_bucketed_batches(train_lengths, config.batch_size, rng):
            t0 = time.monotonic()
            loss = fitted_train_step(model, encoded, [train_rows[p] for p in batch_positions], device, budget,
                                     precision, optimizer)
            n = learned = len(batch_positions)
            if math.isfinite(loss):
                overflows = 0
                # not after a step the fp16 scaler skipped (its gradients overflowed): the warmup and decay count
                # the optimizer's steps (torch warns of a scheduler stepped before its optimizer)
                if precision.step(optimizer, model.parameters(), MAX_GRAD_NORM):
                    scheduler.step()
            else:
                overflows += 1
                _check_overflow(precision, overflows, loss, epoch, step + 1)
                loss, learned = 0.0, 0  # skipped, as the scaler skips an overflowed gradient: no loss to report
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += n  # examples/s counts every batch that ran
            value = loss * learned
            epoch_sum, epoch_n = epoch_sum + value, epoch_n + learned
            since_sum, since_n = since_sum + value, since_n + learned
            clock.steps += 1
            clock.step_seconds += time.monotonic() - t0
            info = {"phase": "train", "epoch": epoch, "epochs": config.epochs, "step": step,
                    "total_steps": total_steps, "train_loss": _r(epoch_sum / epoch_n, 4) if epoch_n else None,
                    "eta_seconds": clock.eta_seconds(step)}
            heartbeat.tick(step / total_steps, info)
            if not clock.is_eval_step(step):
                continue

            t_eval = time.monotonic()
            evaluation = per_task = None
            if val_rows:
                evaluation = fitted_evaluate(model, encoded, val_rows, device, eval_batch, budget,
                                             heartbeat=heartbeat, fraction=step / total_steps, info=info,
                                             precision=precision)
                per_task = data.score(evaluation, encoded, val_rows)
                model.train()
            since = since_sum / since_n if since_n else None  # None: every batch since was skipped (fp16 overflow)
            record = _history_record(step, step / steps_per_epoch, since, evaluation, data.record_fields(per_task))
            history.append(record)
            since_sum, since_n = 0.0, 0
            stopped_early = best.update(model, step, record, evaluation) and step < total_steps
            clock.evaluations += 1
            clock.eval_seconds += time.monotonic() - t_eval
            log.info("step %d/%d: %s", step, total_steps, {k: v for k, v in record.items() if k != "tasks"})
            heartbeat.tick(
                step / total_steps,
                {**{k: v for k, v in record.items() if k != "tasks"}, "phase": "evaluated", "epochs": config.epochs,
                 "total_steps": total_steps, "best_step": best.step, "eta_seconds": clock.eta_seconds(step),
                 "history": list(history)},
                force=True,
            )
            if stopped_early:
                log.info("early stopping at step %d: no better %s in %d evaluations (best at step %s)",
                         step, metric, best.stale, best.step)
                break
        epochs.append(_epoch_record(epoch, epoch_sum / epoch_n if epoch_n else None, epoch_first_step, history,
                                    time.monotonic() - epoch_started, data.metric_keys))
        if stopped_early:
            break
    train_seconds = time.monotonic() - loop_started

    if best.step is None:  # no evaluation ever produced a usable metric value: keep the last one
        best.step, best.record, best.evaluation, best.state = step, history[-1], evaluation, None
    if best.state is not None and best.step != step:
        model.load_state_dict(best.state)
    best.state = None  # the copy is no longer needed: free it before saving

    final = data.final_metrics(model, best, encoded)
    head = {k: final.pop(k) for k in data.metric_keys}  # the headline numbers first, as before task types
    tail = {k: final.pop(k) for k in ("labels", "per_class", "confusion_matrix", "tasks") if k in final}
    metrics: dict[str, Any] = {
        **head,
        "val_loss": best.record["val_loss"],
        **final,  # micro_f1, subset_accuracy, thresholds (multi-label); precision, recall, per_type (tokens) ...
        "history": history,
        "best_step": best.step,
        "stopped_early": stopped_early,
        "metric": metric,
        "steps": step,
        "total_steps": total_steps,
        "epochs": epochs,
        "train_examples": len(train_rows),
        "validation_examples": len(val_rows),
        "validation_source": data.source,
        "train_seconds": _r(train_seconds, 3),
        "examples_per_second": _r(seen / clock.step_seconds, 2) if clock.step_seconds > 0 else None,
        "family": config.family,
        "device": device,
        "amp": precision.name,  # the autocast dtype of training: "bf16", "fp16" or "fp32" (off)
        # the padded tokens per pass the run ended with, and how often running out of device memory halved them
        "train_batch_tokens": budget.tokens,
        "out_of_memory_halvings": budget.halvings,
        "max_length": max_length,
        "encoder_lr": encoder_lr,
        "head_lr": head_lr,
        "class_weights": class_weights,
        "stratified_split": data.stratified,
        "skipped_rows": data.skipped,
        **data.summary(),
        **tail,
    }
    # the task's own report (span data: spans snapped or dropped on the way to word tags) and the caller's
    report = {**metrics.pop("data_report", {}), **(data_report or {})}
    if report:
        metrics["data_report"] = report

    heartbeat.check_stop()
    metadata = {
        "training": {**_config_dict(config), "max_length": max_length, "encoder_lr": encoder_lr,
                     "head_lr": head_lr, "class_weights": class_weights},
        "encoder_source": encoder_path,
        "summary": {k: metrics[k] for k in (*data.metric_keys, "val_loss", "train_examples",
                                            "validation_examples", "best_step", "stopped_early")},
    }
    output_dir = Path(output_dir)
    model.to("cpu")
    save_model(model, tokenizer, output_dir, metadata=metadata)
    metrics["total_seconds"] = _r(time.monotonic() - started, 3)
    if progress is not None:
        progress(1.0, {"phase": "done", "epoch": epochs[-1]["epoch"], "epochs": config.epochs, "step": step,
                       "total_steps": total_steps, **{k: metrics[k] for k in data.metric_keys},
                       "best_step": best.step, "eta_seconds": 0, "history": list(history)})
    return TrainResult(metrics=metrics, tasks={t: list(labels) for t, labels in tasks.items()}, output_dir=output_dir)


def _epoch_record(epoch: int, train_loss: float | None, first_step: int, history: Sequence[Mapping[str, Any]],
                  seconds: float, metric_keys: Sequence[str] = ("accuracy", "macro_f1")) -> dict[str, Any]:
    """An entry of ``metrics.epochs``: the epoch's mean training loss, and the validation values of its last
    evaluation (None when it had none, e.g. with ``eval_steps`` longer than an epoch)."""
    last = history[-1] if history and history[-1]["step"] >= first_step else {}
    record = {"epoch": epoch, "train_loss": _r(train_loss),
              **{k: last.get(k) for k in ("val_loss", *metric_keys)}}
    if "tasks" in last:
        record["tasks"] = last["tasks"]
    record["seconds"] = _r(seconds, 3)
    return record


def _final_metrics(model: Any, best: _Best, data: Encoded, val_rows: Sequence[int],
                   tasks: Mapping[str, Sequence[str]], multi_label: bool) -> dict[str, Any]:
    """The reported metrics of the kept checkpoint (its evaluation's predictions); a multi-label model first gets
    its per-label thresholds tuned on those validation probabilities, and its metrics decide each validation row
    with thresholds tuned on the other rows (``ml.multilabel.cross_fitted_thresholds``), so that they do not
    flatter thresholds chosen on the very rows they judge."""
    first = next(iter(tasks))
    if best.evaluation is None:
        if multi_label:
            per_task = {t: {"accuracy": None, "macro_f1": None, "micro_f1": None, "subset_accuracy": None,
                            "per_class": {}, "validation_examples": 0} for t in tasks}
        else:
            per_task = {t: task_metrics([], [], labels) for t, labels in tasks.items()}
        for metrics in per_task.values():
            metrics["val_loss"] = None
    elif multi_label:
        from ml.multilabel import cross_fitted_thresholds, tune_thresholds

        truth, probs = [data.labels[first][i] for i in val_rows], best.evaluation["probs"][first]
        model.thresholds = tune_thresholds(truth, probs)
        per_task = score(best.evaluation, data, val_rows, tasks, thresholds=cross_fitted_thresholds(truth, probs))
    else:
        per_task = score(best.evaluation, data, val_rows, tasks)

    if model.is_multitask:
        return {
            "accuracy": _mean([m["accuracy"] for m in per_task.values()]),
            "macro_f1": _mean([m["macro_f1"] for m in per_task.values()]),
            "labels": {t: list(labels) for t, labels in tasks.items()},
            "per_class": per_task[first]["per_class"],
            "confusion_matrix": per_task[first]["confusion_matrix"],
            "tasks": {t: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "val_loss": m["val_loss"],
                          "labels": list(tasks[t]), "per_class": m["per_class"],
                          "confusion_matrix": m["confusion_matrix"], "validation_examples": m["validation_examples"]}
                      for t, m in per_task.items()},
        }
    metrics = per_task[first]
    out = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "labels": list(tasks[first]),
           "per_class": metrics["per_class"]}
    if multi_label:
        out.update(micro_f1=metrics["micro_f1"], subset_accuracy=metrics["subset_accuracy"],
                   thresholds=model.thresholds)
    else:
        out["confusion_matrix"] = metrics["confusion_matrix"]
    return out
