"""Token classification in the training loop (``ml.loop``): what this task type gives the shared loop.

The loop asks a *task data* object (:class:`TokenTask` here, ``ml.loop.TextTask`` for text classification) for
everything that differs between task types and runs the same optimisation, evaluation, best-checkpoint, early-stopping
and ETA code for both:

- **rows -> sentences**: the cells of ``config.tokens_column`` / ``config.tags_column`` (default ``tokens`` /
  ``tags``) hold JSON arrays of strings (what ``core.datasets`` stores for CoNLL and token JSONL uploads); the tag
  set is the training sentences' sorted tags, its scheme :func:`core.task_types.tagging.detect_scheme`'s.
  Span data (``core.task_types.token_classification.reads_spans``: ``config.spans_column`` set) holds raw texts
  and character spans instead: the tag set is IOB2 over the training spans' entity types, and each text becomes
  words and tags in :meth:`TokenTask.encode`, with the tokenizer's pre-tokenizer (``ml.token_data.span_sentence``);
  how many spans were snapped to word boundaries or dropped is reported (``summary()["data_report"]``, which the
  loop records as ``metrics["data_report"]``); a validation sentence's dropped spans are false negatives of the
  validation metrics, as in an evaluate job (``ml.token_evaluation``);
- **split by sentence** (``validation_split``), or a separate validation dataset, *before* windowing, so that no
  sentence has windows on both sides;
- **encode**: each sentence's windows (``ml.token_data.word_windows``: a sentence longer than ``max_length`` is split
  into overlapping windows, never cut; the first sub-token of each word carries its tag, every other position
  ``-100``). The loop batches *windows*; labels are (B, T) tag ids padded with ``-100`` (:class:`WindowBatches`);
- **class weights** (``"balanced"``) are counted over the labelled positions of the training windows (one per word);
- **score**: each validation sentence's word tags are put back together from its windows' predictions (each word is
  labelled, and so read, by exactly one window), then scored per entity (``entity_metrics``: exact span and type,
  micro precision / recall / F1, per type, token accuracy) for prefixed schemes, or per word (``tag_metrics``) for
  plain tag sets, where ``f1`` (= micro-F1 over words) equals token accuracy.

Metric keys: ``f1`` (the default early-stopping metric), ``precision``, ``recall``, ``accuracy`` (token accuracy),
``macro_f1`` (mean F1 over the entity types, or tags, present in the validation data), ``per_type``.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.datasets import DatasetError
from core.task_types.tagging import IOB2, PLAIN, detect_scheme, entity_metrics, tag_metrics
from core.task_types.token_classification import reads_spans, span_row, span_tags
from ml.batches import TOKENIZE_CHUNK, Encoded, collate
from ml.config import IGNORE_INDEX, MIN_ROWS, TrainingDataError, head_options
from ml.data import split_indices
from ml.metrics import _r
from ml.token_data import SpanReport, WindowInput, effective_stride, span_sentence, word_windows

TOKEN_CLASSIFICATION = "token-classification"
DEFAULT_TOKENS_COLUMN, DEFAULT_TAGS_COLUMN = "tokens", "tags"
METRIC_KEYS = ("f1", "precision", "recall", "accuracy", "macro_f1")  # of every history record and epoch


def _words(row: Mapping[str, Any], column: str, number: int) -> list[str]:
    """A cell holding a list of strings (a JSON array as text, or already a list)."""
    value = row.get(column)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise TrainingDataError(f"row {number}, column {column!r} must hold a JSON array of strings") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TrainingDataError(f"row {number}, column {column!r} must hold a list of strings")
    return value


@dataclass
class Sentences:
    """Pre-tokenized sentences: words and one tag per word; ``skipped`` counts rows left out (empty sentences)."""

    words: list[list[str]]
    tags: list[list[str]]
    skipped: dict[str, int]


def read_sentences(rows: Sequence[Mapping[str, Any]], tokens_column: str, tags_column: str) -> Sentences:
    """Rows -> :class:`Sentences`; :class:`TrainingDataError` for a missing column, a cell that is not a list of
    strings, tokens and tags of different lengths, or an empty tag. An empty sentence is skipped and counted."""
    if not rows:
        raise TrainingDataError("the dataset has no rows")
    for column in (tokens_column, tags_column):
        if column not in rows[0]:
            raise TrainingDataError(f"column {column!r} not found; the columns are: {', '.join(map(str, rows[0]))}")
    words, tags, skipped = [], [], {"empty_sentence": 0}
    for number, row in enumerate(rows, start=1):
        tokens, labels = _words(row, tokens_column, number), _words(row, tags_column, number)
        if len(tokens) != len(labels):
            raise TrainingDataError(f"row {number} has {len(tokens)} tokens but {len(labels)} tags")
        if not tokens:
            skipped["empty_sentence"] += 1
            continue
        if not all(labels):
            raise TrainingDataError(f"row {number} has an empty tag")
        words.append(tokens)
        tags.append(labels)
    return Sentences(words, tags, skipped)


@dataclass
class SpanTexts:
    """Raw texts, each with its character spans ``(start, end, type)``; ``skipped`` counts rows left out (blank
    texts)."""

    texts: list[str]
    spans: list[list[tuple[int, int, str]]]
    skipped: dict[str, int]

    def types(self) -> set[str]:
        """The entity types of every span."""
        return {kind for spans in self.spans for _, _, kind in spans}


def read_span_texts(rows: Sequence[Mapping[str, Any]], config: Any) -> SpanTexts:
    """Span rows -> :class:`SpanTexts`, each row checked as at upload (``core.task_types.token_classification
    .span_row``; :class:`TrainingDataError` otherwise). A blank text (it can hold no span) is skipped and counted."""
    if not rows:
        raise TrainingDataError("the dataset has no rows")
    for column in (config.text_column, config.spans_column):
        if column not in rows[0]:
            raise TrainingDataError(f"column {column!r} not found; the columns are: {', '.join(map(str, rows[0]))}")
    texts, spans, skipped = [], [], {"empty_sentence": 0}
    for number, row in enumerate(rows, start=1):
        # cells as core.datasets stores them: text (a list or object given as such is its JSON)
        cells = {c: row[c] if isinstance(row[c], str) else json.dumps(row[c])
                 for c in (config.text_column, config.spans_column)}
        try:
            text, row_spans = span_row(cells, config, number)
        except DatasetError as error:
            raise TrainingDataError(str(error)) from None
        if not text.strip():
            skipped["empty_sentence"] += 1
            continue
        texts.append(text)
        spans.append(row_spans)
    return SpanTexts(texts, spans, skipped)


class WindowBatches(Encoded):
    """:class:`ml.batches.Encoded` whose rows are windows: labels are per-position lists, padded with ``-100``."""

    def batch(self, rows: Sequence[int]) -> dict[str, Any]:
        import torch

        batch = collate(self.input_ids, rows, self.pad_id)  # input_ids, attention_mask (B, T)
        width = batch["input_ids"].shape[1]
        batch["labels"] = {}
        for task, per_row in self.labels.items():
            labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
            for b, i in enumerate(rows):
                labels[b, :len(per_row[i])] = torch.tensor(per_row[i], dtype=torch.long)
            batch["labels"][task] = labels
        return batch


class TokenTask:
    """The token-classification task data of one training run (see the module docstring)."""

    task_type = TOKEN_CLASSIFICATION
    default_metric = "f1"
    metric_keys = METRIC_KEYS
    multi_label = False
    stratified = False

    def __init__(self, rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None, config: Any):
        tokens_column = getattr(config, "tokens_column", None) or DEFAULT_TOKENS_COLUMN
        tags_column = getattr(config, "tags_column", None) or DEFAULT_TAGS_COLUMN
        if getattr(config, "multi_label", False):
            raise TrainingDataError("multi_label does not apply to token classification (one tag per word)")
        if getattr(config, "family", None) == "multitask":
            raise TrainingDataError("token classification has no multitask family: choose bert, distilbert or "
                                    "bert_lstm")
        self.spans = reads_spans(config)
        if self.spans:  # words and tags come in encode(), from the tokenizer's words
            train: Sentences | SpanTexts = read_span_texts(rows, config)
            if not train.types():
                raise TrainingDataError(f"column {config.spans_column!r} holds no entity span: there is nothing "
                                        "to learn")
            tag_set, task, n = span_tags(train.types()), config.spans_column, len(train.texts)
            self.scheme = IOB2
        else:
            train = read_sentences(rows, tokens_column, tags_column)
            tag_set, task, n = sorted({tag for sentence in train.tags for tag in sentence}), tags_column, \
                len(train.words)
            if len(tag_set) < 2:
                raise TrainingDataError(f"the training sentences use a single tag ({tag_set[0]!r}): a tagger needs "
                                        "at least 2")
            self.scheme = detect_scheme(train.tags)
        if n < MIN_ROWS:
            raise TrainingDataError(f"need at least {MIN_ROWS} non-empty sentences to train; found {n}")
        self.task = task
        self.tasks = {task: tag_set}
        self.skipped = train.skipped
        self.config = config
        self.texts: list[SpanTexts] = []  # span data: the training texts, then the validation dataset's
        self.data_report: dict[str, Any] = {}
        # span data: per sentence, the entity types of its spans no word could carry (false negatives when scored)
        self.dropped: list[Counter] = []
        if validation_rows is None:
            self.train_sentences, self.val_sentences, _ = split_indices(
                list(range(n)), float(getattr(config, "validation_split", 0.0) or 0.0), int(config.seed))
            held_out = None
            self.source = "split" if self.val_sentences else None
        else:
            if self.spans:
                held_out = read_span_texts(validation_rows, config)
                unknown, what, count = sorted(held_out.types() - train.types()), "entity types", len(held_out.texts)
            else:
                held_out = read_sentences(validation_rows, tokens_column, tags_column)
                unknown = sorted({t for sentence in held_out.tags for t in sentence} - set(tag_set))
                what, count = "tags", len(held_out.words)
            if unknown:
                raise TrainingDataError(f"the validation data uses {what} the training data does not: "
                                        f"{', '.join(unknown[:20])}")
            self.train_sentences = list(range(n))
            self.val_sentences = list(range(n, n + count))
            self.source = "dataset" if self.val_sentences else None
        if self.spans:
            self.texts = [train, *([held_out] if held_out is not None else [])]
            self.words, self.tags = [], []
        else:
            self.words = train.words + (held_out.words if held_out is not None else [])
            self.tags = train.tags + (held_out.tags if held_out is not None else [])
        self.validation_examples = len(self.val_sentences)
        self.stride: int | None = None
        self.windows: list[WindowInput] = []
        self.word_ids: list[list[int | None]] = []
        self.train_rows: list[int] = []
        self.val_rows: list[int] = []

    # ---- what the loop asks for --------------------------------------------------------------------------

    def encode(self, tokenizer: Any, max_length: int, check_stop: Callable[[], None] | None = None) -> WindowBatches:
        """Every sentence's windows (tokenized in chunks, so that a stop request is seen in between); sets
        ``train_rows`` / ``val_rows`` to the windows of the training / validation sentences."""
        self.stride = effective_stride(max_length, getattr(self.config, "stride", None))
        if self.spans:
            self._words_from_spans(tokenizer, check_stop)
        label2id = {tag: i for i, tag in enumerate(self.tasks[self.task])}
        for start in range(0, len(self.words), TOKENIZE_CHUNK):
            if check_stop is not None:
                check_stop()
            end = start + TOKENIZE_CHUNK
            windows, word_ids = word_windows(tokenizer, self.words[start:end], max_length, self.stride,
                                             tags=self.tags[start:end], label2id=label2id)
            for window in windows:
                window.source += start  # chunk-local -> corpus sentence index
            self.windows.extend(windows)
            self.word_ids.extend(word_ids)
        validation = set(self.val_sentences)
        self.train_rows = [i for i, w in enumerate(self.windows) if w.source not in validation]
        self.val_rows = [i for i, w in enumerate(self.windows) if w.source in validation]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return WindowBatches([w.input_ids for w in self.windows], {self.task: [w.labels for w in self.windows]},
                             pad_id)

    def _words_from_spans(self, tokenizer: Any, check_stop: Callable[[], None] | None) -> None:
        """Span data -> ``words`` / ``tags`` (IOB2) with the tokenizer's words, and ``data_report``: the training
        data's spans read, snapped and dropped (and the validation dataset's under ``validation``)."""
        self.words, self.tags, self.data_report, self.dropped = [], [], {}, []
        for part, texts in zip(("train", "validation"), self.texts):
            report = SpanReport()
            for i, (text, spans) in enumerate(zip(texts.texts, texts.spans)):
                if check_stop is not None and i % TOKENIZE_CHUNK == 0:
                    check_stop()
                words, tags, alignment = span_sentence(tokenizer, text, spans)
                self.words.append(words)
                self.tags.append(tags)
                self.dropped.append(alignment.dropped_types)
                report.add(len(spans), alignment)
            if part == "train":
                self.data_report.update(report.as_dict())
            else:
                self.data_report["validation"] = report.as_dict()

    def train_labels(self, encoded: Encoded) -> dict[str, list[int]]:
        """The tag id of every labelled position of the training windows (what "balanced" class weights count)."""
        return {self.task: [y for i in self.train_rows for y in encoded.labels[self.task][i] if y != IGNORE_INDEX]}

    def model_options(self, config: Any, class_weights: dict[str, list[float]] | None) -> dict[str, Any]:
        """``build_model`` options for the token class of ``config.family`` (``ml.config.head_options``)."""
        return head_options(config, class_weights, TOKEN_CLASSIFICATION)

    def configure(self, model: Any) -> None:
        """Record on the model what inference must repeat (saved by ``models.io``)."""
        model.stride, model.scheme = self.stride, self.scheme

    def sentence_tags(self, evaluation: Mapping[str, Any], rows: Sequence[int]) -> dict[int, list[str]]:
        """Each evaluated sentence's predicted word tags, read off its windows: a word's tag is the prediction at
        its first sub-token in the one window that labels it; a word without any token gets ``O`` (or the first
        tag when the tag set has no ``O``)."""
        id2label = self.tasks[self.task]
        fallback = "O" if "O" in id2label else id2label[0]
        predicted: dict[int, list[str]] = {}
        for i, pred in zip(rows, evaluation["pred"][self.task]):
            window = self.windows[i]
            tags = predicted.setdefault(window.source, [fallback] * len(self.words[window.source]))
            word_ids = self.word_ids[window.source]
            for k, position in enumerate(window.positions):
                if position is not None and window.labels[k] != IGNORE_INDEX:  # a word's first sub-token
                    tags[word_ids[position]] = id2label[pred[k]]
        return predicted

    def score(self, evaluation: Mapping[str, Any], encoded: Encoded, rows: Sequence[int],
              thresholds: Any = None) -> dict[str, dict[str, Any]]:
        """``{task: metrics}`` of an ``ml.loop.evaluate`` result over validation windows ``rows``."""
        predicted = self.sentence_tags(evaluation, rows)
        sentences = sorted(predicted)
        gold, pred = [self.tags[s] for s in sentences], [predicted[s] for s in sentences]
        if self.scheme == PLAIN:
            m = tag_metrics(gold, pred)
            per_type = m["per_tag"]
            # every word has one gold and one predicted tag: micro precision = recall = F1 = token accuracy
            metrics = {"f1": m["accuracy"], "precision": m["accuracy"], "recall": m["accuracy"],
                       "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
        else:
            unscored: Counter = Counter()  # span data's dropped spans: gold entities no prediction can find
            for s in sentences if self.dropped else ():
                unscored.update(self.dropped[s])
            m = entity_metrics(gold, pred, unscored=unscored)
            per_type = m["per_type"]
            present = [v["f1"] for v in per_type.values() if v["support"]]
            metrics = {k: m[k] for k in ("f1", "precision", "recall", "accuracy")}
            metrics["macro_f1"] = sum(present) / len(present) if present else None
            metrics["entities"] = m["support"]
        out = {k: _r(v) if isinstance(v, float) else v for k, v in metrics.items()}
        out["per_type"] = {kind: {k: _r(v) if isinstance(v, float) else v for k, v in values.items()}
                           for kind, values in per_type.items()}
        out["validation_sentences"] = len(sentences)
        out["validation_tokens"] = m["tokens"]
        out["val_loss"] = _r(evaluation["task_loss"][self.task])
        return {self.task: out}

    def record_fields(self, per_task: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
        """The validation metrics of one history record (None each without validation)."""
        metrics = (per_task or {}).get(self.task, {})
        return {k: metrics.get(k) for k in METRIC_KEYS}

    def final_metrics(self, model: Any, best: Any, encoded: Encoded) -> dict[str, Any]:
        """The kept checkpoint's metrics (its evaluation's predictions); None each without validation."""
        if best.evaluation is None:
            metrics: dict[str, Any] = {k: None for k in METRIC_KEYS}
            metrics["per_type"] = {}
        else:
            metrics = dict(self.score(best.evaluation, encoded, self.val_rows)[self.task])
            metrics.pop("val_loss")
        return {**metrics, "labels": list(self.tasks[self.task])}

    def summary(self) -> dict[str, Any]:
        """What the run trained on: tag set, scheme, sentences, words and windows per part, the windows' stride."""
        train = self.train_sentences

        def words(sentences: Sequence[int]) -> int:
            return sum(len(self.words[s]) for s in sentences)

        return {
            "task_type": TOKEN_CLASSIFICATION,
            "tags": list(self.tasks[self.task]),
            "scheme": self.scheme,
            "sentences": {"train": len(train), "validation": len(self.val_sentences)},
            "tokens": {"train": words(train), "validation": words(self.val_sentences)},
            "windows": {"train": len(self.train_rows), "validation": len(self.val_rows)},
            "stride": self.stride,
            **({"data_report": dict(self.data_report)} if self.spans else {}),
        }
