"""Question answering in the training loop (``ml.loop``): what this task type gives the shared loop.

- **rows -> examples**: ``core.task_types.question_answering.read_examples`` (answers JSON, CSV answer columns or a
  nested SQuAD file; offsets checked against the context);
- **split by question** (``validation_split``), or a separate validation dataset, *before* windowing, so that no
  question has windows on both sides;
- **encode**: each question's windows (``ml.qa_features``: ``max_length`` windows overlapping by ``doc_stride``;
  the first gold answer labels the window that holds it wholly, every other window points at ``[CLS]``); the loop
  batches *windows*, labels (B, 2) start / end positions (:class:`WindowBatches`);
- **score**: each validation question's answer is read off all its windows (``ml.qa_postprocess.best_answers``,
  no answer allowed when the training data has unanswerable questions) and scored against every gold answer
  (``squad_metrics``).

Metric keys: ``f1`` (the default early-stopping metric), ``exact_match``, ``has_answer_f1``, ``no_answer_accuracy``
(None without unanswerable validation questions).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.datasets import DatasetError
from core.task_types.question_answering import METRIC_KEYS, NAME, Columns, Example, read_examples, squad_metrics
from ml.batches import Encoded
from ml.config import MIN_ROWS, TrainingDataError, _family_options
from ml.data import split_indices
from ml.metrics import _r
from ml.qa_features import QAInputError, Window, make_windows
from ml.qa_postprocess import DEFAULT_MAX_ANSWER_LENGTH, best_answers

TASK = "answer"  # the model's one task (models.question_answering.TASK), labels start / end
LABELS = ["start", "end"]


def read(rows: Sequence[Mapping[str, Any]], config: Any) -> list[Example]:
    """Every example of ``rows``; :class:`TrainingDataError` with the dataset check's message for a bad row."""
    try:
        return list(read_examples(rows, Columns.of(config)))
    except DatasetError as error:
        raise TrainingDataError(str(error)) from None


def answer_span(example: Example) -> tuple[int, int] | None:
    """The character span the windows are labelled with: the first gold answer's (None: unanswerable)."""
    if not example.answerable:
        return None
    text, start = example.answers[0]
    return start, start + len(text)


class WindowBatches(Encoded):
    """:class:`ml.batches.Encoded` whose rows are windows; an evaluation keeps each window's start / end logits."""

    def predictions(self, logits: Any, rows: Sequence[int]) -> list[Any]:
        """Per row ``(start logits, end logits)`` over its own tokens (padding cut off), from (B, T, 2) logits."""
        values = logits.float().cpu().numpy()  # (B, T, 2)
        return [(values[b, :len(self.input_ids[i]), 0], values[b, :len(self.input_ids[i]), 1])
                for b, i in enumerate(rows)]


class QATask:
    """The question-answering task data of one training run (see the module docstring)."""

    task_type = NAME
    default_metric = "f1"
    metric_keys = METRIC_KEYS
    multi_label = False
    stratified = False

    def __init__(self, rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]] | None, config: Any):
        if getattr(config, "family", None) not in ("bert", "distilbert"):
            raise TrainingDataError("question answering trains the bert and distilbert families")
        train = read(rows, config)
        if len(train) < MIN_ROWS:
            raise TrainingDataError(f"need at least {MIN_ROWS} questions to train; found {len(train)}")
        if not any(e.answerable for e in train):
            raise TrainingDataError("no training question has an answer: there is nothing to learn")
        self.task, self.tasks = TASK, {TASK: list(LABELS)}
        self.config = config
        self.doc_stride = int(getattr(config, "doc_stride", 128))
        self.skipped: dict[str, int] = {}
        n = len(train)
        if validation_rows is None:
            self.train_examples, self.val_examples, _ = split_indices(
                list(range(n)), float(getattr(config, "validation_split", 0.0) or 0.0), int(config.seed))
            self.examples = train
            self.source = "split" if self.val_examples else None
        else:
            held_out = read(validation_rows, config)
            self.examples = train + held_out
            self.train_examples, self.val_examples = list(range(n)), list(range(n, len(self.examples)))
            self.source = "dataset" if self.val_examples else None
        # a model may answer "no answer" when it learnt from unanswerable questions
        self.no_answer = any(not self.examples[i].answerable for i in self.train_examples)
        self.validation_examples = len(self.val_examples)
        self.windows: list[Window] = []
        self.train_rows: list[int] = []
        self.val_rows: list[int] = []

    # ---- what the loop asks for --------------------------------------------------------------------------

    def encode(self, tokenizer: Any, max_length: int, check_stop: Callable[[], None] | None = None) -> WindowBatches:
        """Every question's windows; sets ``train_rows`` / ``val_rows`` to the windows of the training / validation
        questions. A question too long for ``max_length`` and ``doc_stride`` fails before any window is made."""
        try:
            self.windows = make_windows(tokenizer, [e.question for e in self.examples],
                                        [e.context for e in self.examples], max_length, self.doc_stride,
                                        answers=[answer_span(e) for e in self.examples], check_stop=check_stop)
        except QAInputError as error:
            raise TrainingDataError(str(error)) from None
        validation = set(self.val_examples)
        self.train_rows = [i for i, w in enumerate(self.windows) if w.source not in validation]
        self.val_rows = [i for i, w in enumerate(self.windows) if w.source in validation]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return WindowBatches([w.input_ids for w in self.windows],
                             {TASK: [[w.start_position, w.end_position] for w in self.windows]}, pad_id,
                             [w.token_type_ids for w in self.windows])

    def train_labels(self, encoded: Encoded) -> dict[str, list[Any]]:
        return {TASK: [encoded.labels[TASK][i][0] for i in self.train_rows]}

    def model_options(self, config: Any, class_weights: dict[str, list[float]] | None) -> dict[str, Any]:
        """``build_model`` options for the QA class: text options it does not take are dropped while unset and
        refused when set; class weights do not apply; ``no_answer`` from the data."""
        from models.registry import family_options

        if class_weights:
            raise TrainingDataError("class_weights do not apply to question answering")
        allowed = set(family_options(config.family, NAME))
        options: dict[str, Any] = {}
        for name, value in _family_options(config, None).items():
            if name in allowed:
                options[name] = value
            elif value is not None:
                raise TrainingDataError(f"{name} does not apply to question answering")
        options["no_answer"] = self.no_answer
        return options

    def configure(self, model: Any) -> None:
        """Record on the model what inference must repeat (saved by ``models.io``): the windows' overlap."""
        model.stride = self.doc_stride

    def answers(self, evaluation: Mapping[str, Any], rows: Sequence[int]) -> dict[int, str]:
        """Each evaluated question's best answer, read off all of its windows."""
        per_example: dict[int, list] = {}
        for i, (start, end) in zip(rows, evaluation["pred"][TASK]):
            window = self.windows[i]
            per_example.setdefault(window.source, []).append((start, end, window.offsets))
        return {source: best_answers(self.examples[source].context, windows,
                                     max_answer_length=DEFAULT_MAX_ANSWER_LENGTH,
                                     allow_no_answer=self.no_answer)[0]["answer"]
                for source, windows in per_example.items()}

    def score(self, evaluation: Mapping[str, Any], encoded: Encoded, rows: Sequence[int],
              thresholds: Any = None) -> dict[str, dict[str, Any]]:
        """``{task: metrics}`` of an ``ml.loop.evaluate`` result over validation windows ``rows``."""
        predicted = self.answers(evaluation, rows)
        sources = sorted(predicted)
        metrics = squad_metrics([predicted[s] for s in sources],
                                [[text for text, _ in self.examples[s].answers] for s in sources])
        out = {k: _r(v) if isinstance(v, float) else v for k, v in metrics.items()}
        out["validation_questions"] = out.pop("questions")
        out["val_loss"] = _r(evaluation["task_loss"][TASK])
        return {TASK: out}

    def record_fields(self, per_task: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
        """The validation metrics of one history record (None each without validation)."""
        metrics = (per_task or {}).get(TASK, {})
        return {k: metrics.get(k) for k in METRIC_KEYS}

    def final_metrics(self, model: Any, best: Any, encoded: Encoded) -> dict[str, Any]:
        """The kept checkpoint's metrics (its evaluation's answers); None each without validation."""
        if best.evaluation is None:
            metrics: dict[str, Any] = {k: None for k in METRIC_KEYS}
        else:
            metrics = dict(self.score(best.evaluation, encoded, self.val_rows)[TASK])
            metrics.pop("val_loss")
        return {**metrics, "labels": list(LABELS)}

    def summary(self) -> dict[str, Any]:
        """What the run trained on: questions (and unanswerable ones) and windows per part, the windows' stride."""
        def unanswerable(examples: Sequence[int]) -> int:
            return sum(not self.examples[i].answerable for i in examples)

        return {
            "task_type": NAME,
            "questions": {"train": len(self.train_examples), "validation": len(self.val_examples)},
            "unanswerable": {"train": unanswerable(self.train_examples),
                             "validation": unanswerable(self.val_examples)},
            "windows": {"train": len(self.train_rows), "validation": len(self.val_rows)},
            "doc_stride": self.doc_stride,
            "no_answer_allowed": self.no_answer,
        }
