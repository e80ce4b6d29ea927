"""ml.evaluation: rows + a predictor -> metrics, with a deterministic stand-in predictor (no model needed)."""
from __future__ import annotations

import pytest

from core.evaluation import EvaluationError, EvaluationPlan, plan_evaluation
from ml.config import TrainingCancelled
from ml.evaluation import evaluate_rows

LABELS = ["neg", "neu", "pos"]


def _keyword_predict(texts, pairs=None):
    """Predicts the label named in the text ("... pos ..."), else "neu"; scores sum to 1."""
    out = []
    for text in texts:
        label = next((label for label in LABELS if label in text.split()), "neu")
        scores = {other: (0.8 if other == label else 0.1) for other in LABELS}
        out.append({"label": label, "score": 0.8, "scores": scores})
    return out


def _rows():
    # (text, truth): 2 right neg, 1 neg predicted pos, 2 right pos, 1 neu predicted neu (no keyword), 1 pos -> neu
    return [{"text": t, "label": y} for t, y in [
        ("so neg", "neg"), ("neg again", "neg"), ("looks pos", "neg"), ("pos", "pos"), ("pos pos", "pos"),
        ("meh", "neu"), ("fine", "pos"), ("", "pos"), ("unlabelled neg", ""),
    ]]


def _plan(**kwargs) -> EvaluationPlan:
    return plan_evaluation("bert", {"sentiment": LABELS}, {"text_column": "text", "label_column": "sentiment"},
                           label_column="label", **kwargs)


def test_single_label_metrics_and_confusion_matrix_sum_to_rows_evaluated():
    metrics = evaluate_rows(_rows(), _plan(), _keyword_predict, chunk_size=2)
    assert metrics["examples"] == 7 and metrics["skipped"] == {"empty_text": 1, "no_label": 1}
    cm = metrics["confusion_matrix"]
    assert cm["labels"] == LABELS
    assert cm["matrix"] == [[2, 0, 1], [0, 1, 0], [0, 1, 2]]  # rows = true label, columns = predicted
    assert sum(map(sum, cm["matrix"])) == metrics["examples"]
    assert metrics["accuracy"] == pytest.approx(5 / 7, abs=1e-6)
    assert metrics["per_class"]["neg"] == {"precision": 1.0, "recall": pytest.approx(2 / 3, abs=1e-6),
                                           "f1": pytest.approx(0.8, abs=1e-6), "support": 3}
    assert set(metrics) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "examples"}


def test_unknown_labels_are_named():
    rows = _rows() + [{"text": "x", "label": "angry"}, {"text": "y", "label": "joy"}]
    with pytest.raises(EvaluationError) as caught:
        evaluate_rows(rows, _plan(), _keyword_predict)
    assert caught.value.code == "unknown_labels" and caught.value.labels == ["angry", "joy"]
    assert "'angry'" in caught.value.message and "'neg'" in caught.value.message


def test_progress_is_reported_and_a_stop_is_honoured():
    seen = []
    evaluate_rows(_rows(), _plan(), _keyword_predict, chunk_size=3, progress=lambda f, info: seen.append(f))
    assert seen == pytest.approx([3 / 7, 6 / 7, 1.0])
    calls = []
    with pytest.raises(TrainingCancelled):
        evaluate_rows(_rows(), _plan(), lambda t, p: calls.append(t) or _keyword_predict(t), chunk_size=3,
                      should_stop=lambda: len(calls) >= 1)
    assert len(calls) == 1


def test_pairs_reach_the_predictor_in_row_order():
    plan = plan_evaluation("bert", {"label": ["same", "diff"]},
                           {"text_column": "a", "text_pair_column": "b", "label_column": "label"})
    seen = []

    def predict(texts, pairs):
        seen.extend(zip(texts, pairs))
        return [{"label": "same" if a == b else "diff", "score": 1.0, "scores": {}} for a, b in zip(texts, pairs)]

    rows = [{"a": "x", "b": "x", "label": "same"}, {"a": "x", "b": "y", "label": "diff"},
            {"a": "x", "b": "", "label": "diff"}]
    metrics = evaluate_rows(rows, plan, predict)
    assert seen == [("x", "x"), ("x", "y")] and metrics["accuracy"] == 1.0
    assert metrics["skipped"]["empty_text"] == 1


def test_multitask_scores_each_task_and_skips_empty_cells_per_task():
    tasks = {"sentiment": ["neg", "pos"], "topic": ["a", "b"]}
    plan = plan_evaluation("multitask", tasks, {"text_column": "text", "label_columns": list(tasks)},
                           label_columns=["topic", "sentiment"])
    assert plan.label_columns == ["sentiment", "topic"]  # the model's task order

    def predict(texts, pairs):
        return [{"tasks": {"sentiment": {"label": "pos", "score": 1.0, "scores": {}},
                           "topic": {"label": "a", "score": 1.0, "scores": {}}}} for _ in texts]

    rows = [{"text": "1", "sentiment": "pos", "topic": "a"}, {"text": "2", "sentiment": "neg", "topic": ""},
            {"text": "3", "sentiment": "", "topic": "b"}]
    metrics = evaluate_rows(rows, plan, predict)
    assert metrics["tasks"]["sentiment"]["confusion_matrix"]["matrix"] == [[0, 1], [0, 1]]
    assert metrics["tasks"]["topic"]["examples"] == 2 and metrics["tasks"]["topic"]["accuracy"] == 0.5
    assert metrics["accuracy"] == 0.5 and metrics["examples"] == 3


def test_nothing_to_evaluate_is_a_clear_error():
    with pytest.raises(EvaluationError, match="no row has both a text and a label"):
        evaluate_rows([{"text": "", "label": "pos"}], _plan(), _keyword_predict)


def test_multi_label_uses_the_models_thresholds():
    tasks = {"tags": ["news", "sport", "tech"]}
    plan = plan_evaluation("bert", tasks, {"text_column": "text", "label_columns": ["tags"], "multi_label": True})
    scores = {"a": {"news": 0.7, "sport": 0.45, "tech": 0.1}, "b": {"news": 0.2, "sport": 0.9, "tech": 0.35}}

    def predict(texts, pairs):
        return [{"labels": [], "scores": scores[t], "label": "news", "score": 0.0} for t in texts]

    rows = [{"text": "a", "tags": "news|sport"}, {"text": "b", "tags": "sport|tech"}]
    at_half = evaluate_rows(rows, plan, predict)  # sport 0.45 and tech 0.35 miss: no row is exactly right
    assert at_half["subset_accuracy"] == 0.0 and at_half["examples"] == 2
    tuned = evaluate_rows(rows, plan, predict, thresholds=[0.5, 0.4, 0.3])
    assert tuned["accuracy"] == tuned["subset_accuracy"] == 1.0 and tuned["micro_f1"] == 1.0
    assert tuned["per_class"]["sport"]["support"] == 2 and "confusion_matrix" not in tuned
