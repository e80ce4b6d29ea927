"""Evaluate a multiple-choice model on a labelled dataset: predict each row's choice and score it against the right
one (``accuracy``, ``macro_f1`` over choice positions, ``per_position``). Pure: the caller passes ``predict(inputs)
-> [{"choice_index", ...}]`` (the model's backend through its batching engine)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.datasets import DatasetError
from core.evaluation import EvaluationError
from core.task_types.multiple_choice import ChoiceEvaluationPlan, ChoiceInput, choice_metrics

from .evaluation import predict_chunks

EVALUATION_CHUNK = 256  # rows per predict() call: progress and should_stop() are checked between chunks


def evaluate_choices(rows: Iterable[Mapping[str, str]], plan: ChoiceEvaluationPlan,
                     predict: Callable[[list[ChoiceInput]], list[dict]], *, chunk_size: int = EVALUATION_CHUNK,
                     progress: Callable[[float, dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The metrics of ``predict`` on every row of ``rows`` (``plan``: which columns; a row without usable choices
    or label raises :class:`EvaluationError` with the row's number); ``examples`` = rows scored."""
    inputs, gold = [], []
    try:
        for number, row in enumerate(rows, start=1):
            example = plan.example(row, number)
            inputs.append(ChoiceInput(example.context, example.question, example.choices))
            gold.append(example.label)
    except DatasetError as exc:
        raise EvaluationError(exc.code, exc.message) from None
    if not inputs:
        raise EvaluationError("nothing_to_evaluate", "the dataset holds no row to evaluate on")
    predicted = predict_chunks(len(inputs),
                               lambda start, end: [int(r["choice_index"]) for r in predict(inputs[start:end])],
                               chunk_size=chunk_size, progress=progress, should_stop=should_stop)
    return choice_metrics(gold, predicted)


def evaluate_model(rows: Iterable[Mapping[str, str]], plan: ChoiceEvaluationPlan,
                   predict: Callable[[list, list | None], list[dict]], predictor: Any, **kwargs: Any
                   ) -> dict[str, Any]:
    """:func:`evaluate_choices` for ``ml.evaluation.evaluate_model`` (the inputs carry their choices: no pairs)."""
    return evaluate_choices(rows, plan, lambda inputs: predict(inputs, None), **kwargs)
