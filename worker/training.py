"""The training loop: rows of a CSV in, a saved classifier + metrics out. Pure: no database, no Celery.

Pipeline of :func:`train_classifier`:

1. **Rows -> examples.** Rows with empty text are skipped. Single-task: rows with an empty label are skipped.
   Multitask: an empty label becomes ``-100`` for that task (the row still trains the other tasks); rows with no
   label at all are skipped. Each task's labels are sorted (deterministic ids). Every task needs >= 2 classes and
   the data >= ``MIN_ROWS`` usable rows, else :class:`TrainingDataError` (message meant for the user).
2. **Split.** ``validation_split`` of the rows is held out, stratified on the (first) task's label when every
   class has >= 2 rows (sklearn ``train_test_split``), else a plain seeded random split. ``validation_split=0``
   trains on everything and reports ``None`` for the validation metrics.
3. **Tokenize once** (truncated to ``max_length``, no padding). Batches are *length-bucketed*: the shuffled
   training set is cut into chunks of ``BUCKET_CHUNK_BATCHES`` batches, each chunk is sorted by length and cut into
   batches, and the batch order is shuffled; every batch is padded only to its own longest row (dynamic padding).
4. **Optimise.** AdamW over ``model.parameter_groups(encoder_lr, head_lr, weight_decay)`` (no decay on biases and
   norms), linear warmup (``warmup_ratio`` of all steps) then linear decay to 0, gradient clipping at 1.0.
   Learning rates: ``encoder_lr`` defaults to ``learning_rate``; ``head_lr`` defaults to
   ``HEAD_LR_MULTIPLIER`` (10) x ``learning_rate`` -- the heads start from random weights (and the LSTM head from
   scratch), so they need larger steps than the pretrained encoder.
5. **Evaluate** accuracy, macro-F1 (sklearn) and loss on the validation split after every epoch.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.schema import LABEL_MAX

log = logging.getLogger(__name__)

MIN_ROWS = 10  # usable (labelled, non-empty) rows needed to train at all
HEAD_LR_MULTIPLIER = 10.0  # default head_lr = HEAD_LR_MULTIPLIER * learning_rate
PROGRESS_INTERVAL_S = 2.0  # progress() cadence (should_stop() is polled at every step)
TOKENIZE_CHUNK = 2048  # texts per tokenizer call: a stop request is seen between chunks
BUCKET_CHUNK_BATCHES = 50  # batches per length-sorted chunk
MAX_GRAD_NORM = 1.0
IGNORE_INDEX = -100


@dataclass
class TrainConfig:
    """Everything that defines a training run (see the module docstring for how each knob is used)."""

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
    """What :func:`train_classifier` returns: JSON-able metrics, the label sets, where the model was saved."""

    metrics: dict[str, Any]
    tasks: dict[str, list[str]]
    output_dir: Path


class TrainingDataError(ValueError):
    """The data (or a data-dependent setting) cannot be trained on; the message is shown to the user."""


class TrainingCancelled(Exception):
    """``should_stop()`` returned True: training stopped and nothing was saved."""


@dataclass
class Examples:
    """Usable rows: texts and, per task, label ids (``-100`` = no label for that task)."""

    texts: list[str]
    labels: dict[str, list[int]]
    tasks: dict[str, list[str]]
    skipped: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ data


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


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, chunk_batches: int = BUCKET_CHUNK_BATCHES
) -> list[list[int]]:
    """Shuffle, sort by length within chunks of ``chunk_batches`` batches, batch, shuffle the batch order.

    Rows of similar length share a batch (little padding) while every epoch still sees a different order.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = max(1, batch_size * chunk_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def collate(
    input_ids: Sequence[Sequence[int]],
    rows: Sequence[int],
    pad_id: int,
    labels: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Pad the selected rows to their longest (right padding): input_ids / attention_mask (B, T), labels (B,)."""
    import torch

    longest = max(len(input_ids[i]) for i in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)  # (B, T)
    for b, i in enumerate(rows):
        seq = input_ids[i]
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        batch["labels"] = {t: torch.tensor([y[i] for i in rows], dtype=torch.long) for t, y in labels.items()}
    return batch


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


# ------------------------------------------------------------------------------------------------ metrics


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def task_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support of one task (rows labelled -100 ignored)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    pairs = [(t, p) for t, p in zip(y_true, y_pred) if t != IGNORE_INDEX]
    if not pairs:
        return {"accuracy": None, "macro_f1": None, "validation_examples": 0, "per_class": {}}
    t, p = zip(*pairs)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=list(range(len(labels))), zero_division=0
    )
    return {
        "accuracy": _r(accuracy_score(t, p)),
        "macro_f1": _r(f1_score(t, p, average="macro", zero_division=0)),
        "validation_examples": len(pairs),
        "per_class": {
            label: {"precision": _r(precision[i]), "recall": _r(recall[i]), "f1": _r(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return _r(sum(values) / len(values)) if values else None


# ------------------------------------------------------------------------------------------------ loop


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


def _tokenize(tokenizer: Any, texts: list[str], max_length: int, heartbeat: _Heartbeat) -> list[list[int]]:
    """Token ids of every text (truncated, unpadded), in chunks so that a stop request is seen in between."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        heartbeat.check_stop()
        ids.extend(tokenizer(
            texts[start : start + TOKENIZE_CHUNK], truncation=True, max_length=max_length, padding=False,
            return_attention_mask=False, return_token_type_ids=False,
        )["input_ids"])
    return ids


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


def _encoder_max_positions(tokenizer: Any, encoder_config: Any) -> int:
    limits = [int(getattr(encoder_config, "max_position_embeddings", 512) or 512)]
    if getattr(encoder_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limits[0] -= 2  # position ids start after the padding index
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 100_000:
        limits.append(model_max)
    return min(limits)


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

    ``device``: ``cpu``, ``cuda[:N]`` or ``auto`` (see :func:`worker.device.resolve_device`).
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

    from models.encoders import load_tokenizer, resolve_encoder
    from models.io import save_model
    from models.registry import build_model

    from .device import configure_torch_threads, resolve_device

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
    max_length = min(config.max_length, _encoder_max_positions(tokenizer, model.encoder_config))
    model.max_length = max_length
    model.to(device)

    encoded = _tokenize(tokenizer, examples.texts, max_length, heartbeat)
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
        "training": {**asdict(config), "max_length": max_length, "encoder_lr": encoder_lr, "head_lr": head_lr,
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
