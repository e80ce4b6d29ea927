"""Evaluate a question-answering model on labelled questions: answer each question from its context and score the
answers against every gold answer (SQuAD exact match and F1, with the has-answer / no-answer breakdown). Pure: the
caller passes ``predict(questions, contexts) -> [{"answer", ...}]``."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.evaluation import EvaluationError
from core.task_types.question_answering import QAEvaluationPlan, squad_metrics

from .backend import InputError
from .evaluation import predict_chunks

EVALUATION_CHUNK = 256  # questions per predict() call: progress and should_stop() are checked between chunks


def evaluate_questions(rows: Iterable[Mapping[str, str]], plan: QAEvaluationPlan,
                       predict: Callable[[list[str], list[str]], list[dict]], *, chunk_size: int = EVALUATION_CHUNK,
                       progress: Callable[[float, dict], None] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The metrics of ``predict`` on every question of ``rows`` (``plan``: which columns): ``exact_match``, ``f1``,
    ``has_answer_exact``, ``has_answer_f1``, ``no_answer_accuracy``, ``has_answer`` / ``no_answer`` counts and
    ``examples`` (questions)."""
    examples = list(plan.examples(rows))
    if not examples:
        raise EvaluationError("nothing_to_evaluate", "the dataset holds no question to evaluate on")

    def answer(start: int, end: int) -> list[str]:
        part = examples[start:end]
        try:
            results = predict([e.question for e in part], [e.context for e in part])
        except InputError as exc:  # numbered within this chunk: name the question's row of the dataset
            if exc.position is None or not 0 <= exc.position < len(part):
                raise
            raise exc.about(part[exc.position].where) from None
        return [result["answer"] for result in results]

    answers = predict_chunks(len(examples), answer, chunk_size=chunk_size, progress=progress, should_stop=should_stop)
    metrics = squad_metrics(answers, [[text for text, _ in e.answers] for e in examples])
    metrics["examples"] = metrics.pop("questions")
    return metrics


def evaluate_model(rows: Iterable[Mapping[str, str]], plan: QAEvaluationPlan,
                   predict: Callable[[list[str], list[str]], list[dict]], predictor: Any, **kwargs: Any
                   ) -> dict[str, Any]:
    """:func:`evaluate_questions` for ``ml.evaluation.evaluate_model`` (questions and their contexts are the pairs)."""
    return evaluate_questions(rows, plan, predict, **kwargs)
