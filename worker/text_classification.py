"""What the worker's jobs know about the text-classification task type, in one place (not a job type).

Texts or sentence pairs in; one label, several (``multi_label``) or one per label column (multitask) out. The job
modules call these functions instead of branching on those shapes themselves, so that the task-type registry
(``core.task_types``) can take them over and another task type can bring its own.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator

from sqlalchemy import func, select

from core.datasets import open_rows
from core.schema import Job, Prediction, TrainedModel
from core.specs import ClassifyRequest
from core.task_types.token_classification import span_text
from ml.data import row_text

# (index, text (a token model's pre-tokenized sentence: its words), text pair or None, row id or None): one input of
# a classify job
Input = tuple[int, str | list[str], str | None, str | None]


def request_size(request: ClassifyRequest) -> int:
    """How many inputs a request sent inline (texts, pairs, pre-tokenized sentences, questions or multiple-choice
    questions)."""
    return len(next(x for x in (request.pairs, request.tokens, request.questions, request.choice_questions,
                                request.texts) if x is not None))


def _words(cell: str) -> str | list[str]:
    """A cell as a token model reads it: a JSON array of non-blank strings is a pre-tokenized sentence, a Label
    Studio ``data`` object its ``text`` (as span training reads it), anything else a raw text."""
    if cell.lstrip().startswith("{"):
        return span_text(cell)
    if cell.lstrip().startswith("["):
        try:
            words = json.loads(cell)
        except (ValueError, RecursionError):  # nested deeper than the parser goes: a raw text
            return cell
        if isinstance(words, list) and words and all(isinstance(w, str) and w.strip() for w in words):
            return words
    return cell


def job_inputs(request: ClassifyRequest, dataset: tuple[bytes, str] | None, *,
               words_in_cells: bool = False) -> Iterator[Input]:
    """Every input of a classify job, in order: the request's texts or pairs, else the rows of ``dataset``
    (content, format) read as the model was trained; dataset rows with an empty text (or pair text) are skipped
    (nothing to classify)."""
    if dataset is None:
        if request.pairs is not None:
            for index, (text, pair) in enumerate(request.pairs):
                yield index, text, pair, None
        elif request.questions is not None:  # question answering: the question, then its context as the pair
            for index, question in enumerate(request.questions):
                yield index, question.question, question.context, None
        elif request.tokens is not None:  # token classification: the words themselves are the input
            for index, words in enumerate(request.tokens):
                yield index, words, None, None
        else:
            for index, text in enumerate(request.texts):
                yield index, text, None, None
        return
    content, fmt = dataset
    text_column, template, pair_column, id_column = (request.text_column, request.text_template,
                                                     request.text_pair_column, request.id_column)
    for index, row in enumerate(open_rows(content, fmt)):
        text = row_text(row, text_column, template)  # as the model was trained
        if words_in_cells:
            text = _words(text)  # a token model: a cell holding a JSON array of words is a pre-tokenized sentence
        pair = row.get(pair_column, "") if pair_column else None
        if (text.strip() if isinstance(text, str) else text) and (pair is None or pair.strip()):
            yield index, text, pair, (row.get(id_column) if id_column else None)


def chunk_texts(request: ClassifyRequest, chunk: list[Input]) -> tuple[list[str], list[str] | None]:
    """A chunk's texts and, for a pair model, their second texts (what the batching engine takes)."""
    return [item[1] for item in chunk], [item[2] for item in chunk] if request.with_pairs else None


class LabelCounts:
    """The label counts of the prediction rows one attempt stored (a classify job's ``metrics.label_counts``)."""

    def __init__(self) -> None:
        self._per_task: dict[str | None, Counter] = {}  # per task; a single-task row counts under the key None

    def add(self, rows: Iterable[dict]) -> None:
        """Count ``worker.serving.prediction_row`` dicts."""
        for row in rows:
            if row.get("labels") is not None:  # multi-label: texts per label (a text may count under several)
                self._per_task.setdefault(None, Counter()).update(row["labels"])
                continue
            # multitask rows count per task; a single-task row counts under the key None
            for task, result in (row.get("tasks") or {None: row}).items():
                self._per_task.setdefault(task, Counter())[result["label"]] += 1

    def metrics(self) -> dict:
        """``{label: n}``, or ``{task: {label: n}}`` for a multitask model."""
        if None in self._per_task:
            return dict(sorted(self._per_task[None].items()))
        return {task: dict(sorted(c.items())) for task, c in self._per_task.items()}


def label_distribution(session, job_id: str) -> dict:
    """Label counts of a job's stored predictions: ``{label: n}``, or ``{task: {label: n}}`` for a multitask model
    (multi-label: texts per label, counted from each prediction's ``labels``)."""
    params = session.scalar(select(TrainedModel.params).join(Job, Job.model_id == TrainedModel.id)
                            .where(Job.id == job_id)) or {}
    if params.get("multi_label"):
        counts: Counter = Counter()
        for labels in session.scalars(select(Prediction.labels).where(Prediction.job_id == job_id)
                                      .execution_options(yield_per=1000)):
            counts.update(labels or [])
        return dict(sorted(counts.items()))
    per_task: dict[str, Counter] = {}
    rows = session.scalars(
        select(Prediction.tasks)
        .where(Prediction.job_id == job_id, Prediction.tasks.is_not(None))
        .execution_options(yield_per=1000)  # a dataset job may have hundreds of thousands of rows
    )
    for tasks in rows:
        for task, result in (tasks or {}).items():
            per_task.setdefault(task, Counter())[result["label"]] += 1
    if per_task:
        return {task: dict(sorted(counts.items())) for task, counts in per_task.items()}
    rows = session.execute(
        select(Prediction.label, func.count()).where(Prediction.job_id == job_id).group_by(Prediction.label)
    ).all()
    return {label: count for label, count in sorted(rows)}


def model_labels(result) -> tuple[list[str], dict[str, list[str]]]:
    """A trained model's ``labels`` (its first task's) and ``tasks`` (``{task: [label, ...]}``) columns, from
    ``ml.config.TrainResult.tasks``."""
    tasks = {task: list(labels) for task, labels in result.tasks.items()}
    return next(iter(tasks.values())), tasks
