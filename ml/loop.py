"""The training loop: rows of a CSV in, a saved classifier + metrics out. Pure: no database, no Celery.

Pipeline of :func:`train_classifier`:

1. **Rows -> examples** and 2. **split**: :mod:`ml.data` (:func:`~ml.data.prepare_examples`,
   :func:`~ml.data.split_indices`).
3. **Tokenize once** and cut length-bucketed, dynamically padded batches: :mod:`ml.batches`.
4. **Optimise.** AdamW over ``model.parameter_groups(encoder_lr, head_lr, weight_decay)`` (no decay on biases and
   norms), linear warmup (``warmup_ratio`` of all steps) then linear decay to 0, gradient clipping at 1.0.
   Learning rates: ``encoder_lr`` defaults to ``learning_rate``; ``head_lr`` defaults to
   ``HEAD_LR_MULTIPLIER`` (10) x ``learning_rate`` -- the heads start from random weights (and the LSTM head from
   scratch), so they need larger steps than the pretrained encoder.
5. **Evaluate** accuracy, macro-F1 (sklearn, :mod:`ml.metrics`) and loss on the validation split after every epoch.
6. **Save** the final model with :func:`models.io.save_model` into ``output_dir``.

``progress(fraction, info)`` is called at least every ``PROGRESS_INTERVAL_S`` seconds and at every epoch end;
``should_stop()`` must be cheap (it reads a flag): it is polled in every phase -- before loading the encoder,
after building the model (before each tokenizer chunk), after every training and evaluation step, and before
saving. When it returns True, :class:`TrainingCancelled` is raised and nothing is written.
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ml.batches import collate, encoder_max_positions, length_bucketed_batches, tokenize
from ml.config import (
    HEAD_LR_MULTIPLIER,
    IGNORE_INDEX,
    TrainConfig,
    TrainingCancelled,
    TrainingDataError,
    TrainResult,
    _check_config,
    _family_options,
)
from ml.data import prepare_examples, resolve_class_weights, split_indices
from ml.metrics import _mean, _r, task_metrics

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 2.0  # progress() cadence (should_stop() is polled at every step)
MAX_GRAD_NORM = 1.0


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


def evaluate(model: Any, input_ids: Sequence[Sequence[int]], labels: Mapping[str, Sequence[int]], rows: Sequence[int],
             pad_id: int, device: str, batch_size: int, heartbeat: _Heartbeat | None = None,
             fraction: float = 0.0, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Loss and predictions on ``rows``: ``{"loss", "task_loss": {task: ...}, "pred": {task: [...]}}``."""
    import torch

    model.eval()
    order = sorted(rows, key=lambda i: len(input_ids[i]))
    preds: dict[str, dict[int, int]] = {t: {} for t in labels}
    loss_sum, task_loss_sum = 0.0, {t: 0.0 for t in labels}
    task_count = {t: 0 for t in labels}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate(input_ids, chunk, pad_id, labels)
            batch_labels = {t: y.to(device) for t, y in batch["labels"].items()}
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), labels=batch_labels)
            logits = out.logits if isinstance(out.logits, dict) else {next(iter(labels)): out.logits}
            loss_sum += float(out.loss) * len(chunk)
            for task, task_logits in logits.items():
                n = int((batch_labels[task] != IGNORE_INDEX).sum())
                if n:
                    task_loss_sum[task] += float(model.task_loss(task, task_logits, batch_labels[task])) * n
                    task_count[task] += n
                for i, p in zip(chunk, task_logits.argmax(dim=-1).tolist()):
                    preds[task][i] = p
            if heartbeat is not None:
                heartbeat.tick(fraction, {**(info or {}), "phase": "evaluate"})
    return {
        "loss": loss_sum / max(1, len(order)),
        "task_loss": {t: (task_loss_sum[t] / task_count[t] if task_count[t] else None) for t in labels},
        "pred": {t: [preds[t][i] for i in rows] for t in labels},
    }


def train_classifier(
    rows: list[dict[str, str]],
    config: TrainConfig,
    output_dir: Path,
    *,
    device: str = "cpu",
    encoder_cache_dir: Path | None = None,
    progress: Callable[[float, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``config.family`` on ``rows`` and save it to ``output_dir`` (see the module docstring).

    ``device``: ``cpu``, ``cuda[:N]`` or ``auto`` (see :func:`ml.device.resolve_device`).
    ``encoder_cache_dir``: where the converted default DistilBERT encoder is cached (default
    :func:`models.encoders.default_cache_dir`).

    Metrics (JSON-able; single-task)::

        {"accuracy", "macro_f1", "val_loss",               # last epoch, on the validation split (None without one)
         "epochs": [{"epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds"}],
         "train_examples", "validation_examples",
         "train_seconds",                                  # wall time of the epoch loop incl. evaluation
         "examples_per_second",                            # training examples / seconds spent in training steps
         "labels": [...], "per_class": {label: {"precision", "recall", "f1", "support"}},
         "family", "device", "max_length", "encoder_lr", "head_lr", "class_weights", "stratified_split"}

    Multitask: ``"tasks": {task: {"accuracy", "macro_f1", "val_loss", "labels", "per_class",
    "validation_examples"}}``, epochs carry ``"tasks": {task: {"accuracy", "macro_f1", "val_loss"}}``, the
    top-level ``accuracy`` / ``macro_f1`` are the means over tasks and ``labels`` is ``{task: [...]}``.

    Raises :class:`TrainingDataError` for unusable data/settings and :class:`TrainingCancelled` when stopped.
    """
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model, resolve_encoder

    from ml.device import configure_torch_threads, resolve_device

    started = time.monotonic()
    _check_config(config)
    heartbeat = _Heartbeat(progress, should_stop)
    heartbeat.check_stop()
    device = resolve_device(device)
    if device == "cpu":
        configure_torch_threads()

    examples = prepare_examples(rows, config)
    tasks = examples.tasks
    first = next(iter(tasks))
    train_rows, val_rows, stratified = split_indices(examples.labels[first], config.validation_split, config.seed)
    train_labels = {t: [y[i] for i in train_rows] for t, y in examples.labels.items()}
    for task in tasks:
        if all(y == IGNORE_INDEX for y in train_labels[task]):
            raise TrainingDataError(f"no training row has a label for {task!r}")
    class_weights = resolve_class_weights(config.class_weights, tasks, train_labels)
    if config.task_weights is not None:
        unknown = set(config.task_weights) - set(tasks)
        if unknown:
            raise TrainingDataError(f"task_weights names unknown tasks: {', '.join(sorted(unknown))}")

    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)

    heartbeat.tick(0.0, {"phase": "loading"}, force=True)
    try:
        encoder_path = resolve_encoder(config.family, config.encoder, encoder_cache_dir)
    except ValueError as error:
        raise TrainingDataError(str(error)) from error
    tokenizer = load_tokenizer(encoder_path)
    model = build_model(config.family, tasks, encoder_path, **_family_options(config, class_weights))
    max_length = min(config.max_length, encoder_max_positions(tokenizer, model.encoder_config))
    model.max_length = max_length
    model.to(device)

    encoded = tokenize(tokenizer, examples.texts, max_length, heartbeat.check_stop)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(ids) for ids in encoded]
    train_lengths = [lengths[i] for i in train_rows]

    encoder_lr = config.encoder_lr if config.encoder_lr is not None else config.learning_rate
    head_lr = config.head_lr if config.head_lr is not None else config.learning_rate * HEAD_LR_MULTIPLIER
    optimizer = torch.optim.AdamW(model.parameter_groups(encoder_lr, head_lr, config.weight_decay))
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    rng = random.Random(config.seed)
    eval_batch = max(32, config.batch_size * 2)

    epochs: list[dict[str, Any]] = []
    step, train_step_seconds, seen = 0, 0.0, 0
    last_eval: dict[str, Any] | None = None
    loop_started = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.monotonic()
        model.train()
        loss_sum, loss_n = 0.0, 0
        for batch_positions in length_bucketed_batches(train_lengths, config.batch_size, rng):
            t0 = time.monotonic()
            rows_b = [train_rows[p] for p in batch_positions]
            batch = collate(encoded, rows_b, pad_id, examples.labels)
            out = model(
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                labels={t: y.to(device) for t, y in batch["labels"].items()},
            )
            loss = out.loss
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at epoch {epoch}, step {step + 1} (loss {float(loss)}); "
                                   "try a lower learning rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(rows_b)
            loss_sum += float(loss.detach()) * len(rows_b)
            loss_n += len(rows_b)
            train_step_seconds += time.monotonic() - t0
            heartbeat.tick(
                step / total_steps,
                {"phase": "train", "epoch": epoch, "epochs": config.epochs, "step": step,
                 "total_steps": total_steps, "train_loss": _r(loss_sum / loss_n, 4)},
            )
        record: dict[str, Any] = {"epoch": epoch, "train_loss": _r(loss_sum / max(1, loss_n))}
        if val_rows:
            last_eval = evaluate(
                model, encoded, examples.labels, val_rows, pad_id, device, eval_batch, heartbeat,
                step / total_steps, {"epoch": epoch, "epochs": config.epochs},
            )
            record["val_loss"] = _r(last_eval["loss"])
            per_task = {
                t: {**{k: v for k, v in task_metrics([examples.labels[t][i] for i in val_rows], last_eval["pred"][t],
                                                     tasks[t]).items() if k in ("accuracy", "macro_f1")},
                    "val_loss": _r(last_eval["task_loss"][t])}
                for t in tasks
            }
        else:
            record["val_loss"] = None
            per_task = {t: {"accuracy": None, "macro_f1": None, "val_loss": None} for t in tasks}
        if model.is_multitask:
            record["accuracy"] = _mean([m["accuracy"] for m in per_task.values()])
            record["macro_f1"] = _mean([m["macro_f1"] for m in per_task.values()])
            record["tasks"] = per_task
        else:
            record["accuracy"] = per_task[first]["accuracy"]
            record["macro_f1"] = per_task[first]["macro_f1"]
        record["seconds"] = _r(time.monotonic() - epoch_started, 3)
        epochs.append(record)
        log.info("epoch %d/%d: %s", epoch, config.epochs, {k: v for k, v in record.items() if k != "tasks"})
        heartbeat.tick(
            epoch / config.epochs,
            {"phase": "epoch_end", "epoch": epoch, "epochs": config.epochs, "step": step, "total_steps": total_steps,
             "train_loss": record["train_loss"], "val_loss": record["val_loss"],
             "accuracy": record["accuracy"], "macro_f1": record["macro_f1"]},
            force=True,
        )
    train_seconds = time.monotonic() - loop_started

    final = epochs[-1]
    metrics: dict[str, Any] = {
        "accuracy": final["accuracy"],
        "macro_f1": final["macro_f1"],
        "val_loss": final["val_loss"],
        "epochs": epochs,
        "train_examples": len(train_rows),
        "validation_examples": len(val_rows),
        "train_seconds": _r(train_seconds, 3),
        "examples_per_second": _r(seen / train_step_seconds, 2) if train_step_seconds > 0 else None,
        "family": config.family,
        "device": device,
        "max_length": max_length,
        "encoder_lr": encoder_lr,
        "head_lr": head_lr,
        "class_weights": class_weights,
        "stratified_split": stratified,
        "skipped_rows": examples.skipped,
    }
    full = {
        t: (task_metrics([examples.labels[t][i] for i in val_rows], last_eval["pred"][t], tasks[t])
            if last_eval is not None else task_metrics([], [], tasks[t]))
        for t in tasks
    }
    if model.is_multitask:
        metrics["labels"] = {t: list(labels) for t, labels in tasks.items()}
        metrics["tasks"] = {
            t: {"accuracy": full[t]["accuracy"], "macro_f1": full[t]["macro_f1"],
                "val_loss": final["tasks"][t]["val_loss"], "labels": list(tasks[t]),
                "per_class": full[t]["per_class"], "validation_examples": full[t]["validation_examples"]}
            for t in tasks
        }
    else:
        metrics["labels"] = list(tasks[first])
        metrics["per_class"] = full[first]["per_class"]

    heartbeat.check_stop()
    metadata = {
        "training": {**config.model_dump(mode="json"), "max_length": max_length, "encoder_lr": encoder_lr, "head_lr": head_lr,
                     "class_weights": class_weights},
        "encoder_source": encoder_path,
        "summary": {k: metrics[k] for k in ("accuracy", "macro_f1", "val_loss", "train_examples",
                                            "validation_examples")},
    }
    output_dir = Path(output_dir)
    model.to("cpu")
    save_model(model, tokenizer, output_dir, metadata=metadata)
    metrics["total_seconds"] = _r(time.monotonic() - started, 3)
    if progress is not None:
        progress(1.0, {"phase": "done", "epoch": config.epochs, "epochs": config.epochs,
                       "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]})
    return TrainResult(metrics=metrics, tasks={t: list(labels) for t, labels in tasks.items()}, output_dir=output_dir)
