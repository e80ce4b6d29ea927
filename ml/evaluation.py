"""Evaluate a saved model on labelled rows: predict every usable row and score the predictions against its labels.

Pure: no SQL, no Celery. The caller passes the rows, the :class:`core.evaluation.EvaluationPlan` (which columns,
which task shape) and ``predict(texts, pairs) -> [result]`` (``ml.inference.Predictor.predict``'s results); this
module builds the inputs, calls ``predict`` chunk by chunk (polling ``should_stop`` and reporting ``progress``
between chunks) and returns the metrics stored with the job:

- single-label: ``ml.metrics.task_metrics``: ``accuracy``, ``macro_f1``, ``per_class`` ``{label: {precision,
  recall, f1, support}}``, ``confusion_matrix`` ``{"labels", "matrix"}`` (rows = true label, columns = predicted);
- multitask: the same per task under ``tasks``; the top level holds the tasks' mean accuracy / macro-F1 and the
  first task's per-class metrics and confusion matrix;
- multi-label: ``ml.multilabel.multilabel_metrics`` (subset accuracy as ``accuracy``, micro/macro-F1, per label).

Every result also has ``examples`` (rows scored: the confusion matrix sums to it) and ``skipped``
(``empty_text``, ``no_label``). Other task types are scored by their own evaluators (:data:`EVALUATORS`;
:func:`evaluate_model` picks one).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from core.evaluation import EvaluationError, EvaluationPlan

from .config import IGNORE_INDEX, TrainingCancelled
from .data import row_text
from .metrics import task_metrics

EVALUATION_CHUNK = 512  # rows per predict() call: progress and should_stop() are checked between chunks

Predict = Callable[[list[str], list[str] | None], list[dict]]


# the evaluator of every task type but text classification ("module:function", imported when a job needs it), as
# ml.inference.BACKENDS: each takes evaluate_model's arguments but the task type
EVALUATORS = {
    "token-classification": ".token_evaluation:evaluate_model",
    "question-answering": ".qa_evaluation:evaluate_model",
    "multiple-choice": ".mc_evaluation:evaluate_model",
}


def evaluate_model(task_type: str, rows: Iterable[Mapping[str, Any]], plan: Any, predict: Predict, predictor: Any, *,
                   progress: Callable[[float, dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The metrics of a model of ``task_type`` (its ``ml.inference`` backend ``predictor``; ``predict(texts,
    pairs)`` classifies one chunk on it) on ``rows`` read by ``plan`` (the task type's
    ``evaluation_plan_from_params``): by the task type's evaluator (:data:`EVALUATORS`), else :func:`evaluate_rows`
    with a multi-label model's own decision thresholds."""
    if task_type in EVALUATORS:
        module, name = EVALUATORS[task_type].split(":")
        evaluator = getattr(importlib.import_module(module, __package__), name)
        return evaluator(rows, plan, predict, predictor, progress=progress, should_stop=should_stop)
    return evaluate_rows(rows, plan, predict, thresholds=getattr(predictor.model, "thresholds", None),
                         progress=progress, should_stop=should_stop)


class Inputs:
    """The usable rows of a dataset: texts, pair texts (pair models) and true labels per task."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.pairs: list[str] | None = None
        self.truth: list[dict[str, Any]] = []
        self.skipped = {"empty_text": 0, "no_label": 0}



def predict_chunks(total: int, predict: Callable[[int, int], list], *, chunk_size: int = EVALUATION_CHUNK,
                   progress: Callable[[float, dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> list:
    """``predict(start, end)`` over ``range(total)`` in chunks of ``chunk_size``, the results concatenated; every
    task type's evaluation runs its predictions this way. Between chunks: :class:`TrainingCancelled` once
    ``should_stop()`` is true, and ``progress(fraction, {"phase": "evaluate", "examples": done})``."""
    results: list = []
    for start in range(0, total, chunk_size):
        if should_stop is not None and should_stop():
            raise TrainingCancelled("the evaluation was cancelled")
        end = min(total, start + chunk_size)
        results.extend(predict(start, end))
        if progress is not None:
            progress(end / total, {"phase": "evaluate", "examples": end})
    return results

def read_inputs(rows: Iterable[Mapping[str, Any]], plan: EvaluationPlan) -> Inputs:
    """Build the model's inputs and the true labels from ``rows``; rows without text (or, single-label, without a
    label) are skipped and counted. Labels the model does not know raise :class:`EvaluationError`."""
    inputs = Inputs()
    if plan.text_pair_column is not None:
        inputs.pairs = []
    for row in rows:
        text = _text(row, plan)
        pair = _cell(row, plan.text_pair_column) if plan.text_pair_column is not None else None
        if not text.strip() or (pair is not None and not pair.strip()):
            inputs.skipped["empty_text"] += 1
            continue
        truth = plan.truth(row)
        if not plan.multi_label and all(label is None for label in truth.values()):
            inputs.skipped["no_label"] += 1
            continue
        inputs.texts.append(text)
        if inputs.pairs is not None:
            inputs.pairs.append(pair)
        inputs.truth.append(truth)
    plan.check_truths(inputs.truth)
    return inputs


def evaluate_rows(
    rows: Iterable[Mapping[str, Any]],
    plan: EvaluationPlan,
    predict: Predict,
    *,
    thresholds: Sequence[float] | None = None,
    chunk_size: int = EVALUATION_CHUNK,
    progress: Callable[[float, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Predict every usable row of ``rows`` and return the metrics (see the module docstring).

    ``thresholds``: a multi-label model's decision threshold per label (default 0.5 each). Raises
    :class:`EvaluationError` (nothing to evaluate, unknown labels) and :class:`ml.config.TrainingCancelled` when
    ``should_stop()`` turns true.
    """
    inputs = read_inputs(rows, plan)
    if not inputs.texts:
        raise EvaluationError("nothing_to_evaluate", f"no row has both a text and a label to evaluate on "
                              f"({inputs.skipped['empty_text']} without text, {inputs.skipped['no_label']} "
                              "without a label)")
    total = len(inputs.texts)
    results = predict_chunks(total, lambda start, end: predict(
        inputs.texts[start:end], inputs.pairs[start:end] if inputs.pairs is not None else None),
        chunk_size=chunk_size, progress=progress, should_stop=should_stop)
    if should_stop is not None and should_stop():
        raise TrainingCancelled("the evaluation was cancelled")
    if plan.multi_label:
        metrics = _multilabel_metrics(inputs, results, plan, thresholds)
    else:
        metrics = _single_label_metrics(inputs, results, plan)
    metrics["examples"] = total
    metrics["skipped"] = inputs.skipped
    return metrics


# ---------------------------------------------------------------- metrics per task shape


def _single_label_metrics(inputs: Inputs, results: list[dict], plan: EvaluationPlan) -> dict[str, Any]:
    per_task: dict[str, dict[str, Any]] = {}
    for task, labels in plan.tasks.items():
        index = {label: i for i, label in enumerate(labels)}
        y_true = [index[t[task]] if t[task] is not None else IGNORE_INDEX for t in inputs.truth]
        y_pred = [index[_task_result(r, task, plan)["label"]] for r in results]
        metrics = task_metrics(y_true, y_pred, labels)  # with the confusion matrix of these rows
        metrics["examples"] = metrics.pop("validation_examples")
        per_task[task] = metrics
    if len(per_task) == 1:
        return next(iter(per_task.values()))
    first = per_task[plan.task]
    return {
        "accuracy": _mean(m["accuracy"] for m in per_task.values()),
        "macro_f1": _mean(m["macro_f1"] for m in per_task.values()),
        "per_class": first["per_class"],  # the first task's, as Prediction.label is (the page shows tasks too)
        "confusion_matrix": first["confusion_matrix"],
        "tasks": per_task,
    }


def _multilabel_metrics(inputs: Inputs, results: list[dict], plan: EvaluationPlan,
                        thresholds: Sequence[float] | None) -> dict[str, Any]:
    from .multilabel import multilabel_metrics

    labels = plan.tasks[plan.task]
    truths = [set(t[plan.task]) for t in inputs.truth]
    targets = [[1 if label in truth else 0 for label in labels] for truth in truths]
    probs = [[float((r.get("scores") or {}).get(label, 0.0)) for label in labels] for r in results]
    metrics = multilabel_metrics(targets, probs, labels, list(thresholds) if thresholds else [0.5] * len(labels))
    metrics.pop("validation_examples", None)
    return metrics


def _task_result(result: dict, task: str, plan: EvaluationPlan) -> dict:
    return result["tasks"][task] if "tasks" in result else result


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 6) if present else None


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def _text(row: Mapping[str, Any], plan: EvaluationPlan) -> str:
    # as training built it (the predictor applies the model's text normalization itself)
    return row_text(row, plan.text_column, plan.text_template)
