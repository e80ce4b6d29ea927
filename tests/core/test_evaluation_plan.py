"""core.evaluation: an evaluation request resolved against the model's task shape, and each row's true labels."""
from __future__ import annotations

import pytest

from core.evaluation import EvaluationError, EvaluationPlan, plan_evaluation

SINGLE = {"text_column": "text", "label_column": "sentiment", "label_columns": ["sentiment"]}


def test_columns_default_to_the_models_and_the_plan_round_trips_through_params():
    plan = plan_evaluation("bert", {"sentiment": ["neg", "pos"]}, SINGLE)
    assert (plan.text_column, plan.label_columns, plan.columns) == ("text", ["sentiment"], ["text", "sentiment"])
    assert EvaluationPlan.from_params({"model_id": 3, **plan.to_params()}) == plan
    other = plan_evaluation("bert", {"sentiment": ["neg", "pos"]}, SINGLE, text_column="body", label_column="gold")
    assert other.columns == ["body", "gold"] and other.truth({"body": "x", "gold": " pos "}) == {"sentiment": "pos"}


def test_single_label_model_takes_one_label_column():
    with pytest.raises(EvaluationError) as caught:
        plan_evaluation("bert", {"sentiment": ["neg", "pos"]}, SINGLE, label_columns=["a", "b"])
    assert caught.value.code == "label_columns_mismatch"


def test_multitask_label_columns_must_be_its_tasks():
    tasks = {"sentiment": ["neg", "pos"], "topic": ["a", "b"]}
    with pytest.raises(EvaluationError) as caught:
        plan_evaluation("multitask", tasks, {"text_column": "text"}, label_columns=["sentiment", "mood"])
    assert caught.value.code == "label_columns_mismatch"
    assert "missing 'topic'" in caught.value.message and "not the model's: 'mood'" in caught.value.message
    plan = plan_evaluation("multitask", tasks, {"text_column": "text"})
    assert plan.truth({"text": "t", "sentiment": "pos", "topic": ""}) == {"sentiment": "pos", "topic": None}


def test_multi_label_joined_column_or_one_flag_column_per_label():
    tasks = {"tags": ["news", "sport", "tech"]}
    joined = plan_evaluation("bert", tasks, {"text_column": "text", "label_columns": ["tags"], "multi_label": True,
                                             "label_separator": ";"})
    assert joined.label_separator == ";" and joined.truth({"tags": "sport; news;;"}) == {"tags": ["sport", "news"]}
    assert joined.truth({"tags": ""}) == {"tags": []}
    flags = plan_evaluation("bert", tasks, {"text_column": "text", "multi_label": True},
                            label_columns=["tech", "news", "sport"])
    assert flags.label_separator is None and flags.label_columns == ["news", "sport", "tech"]
    assert flags.truth({"news": "1", "sport": "0", "tech": "true"}) == {"tags": ["news", "tech"]}
    with pytest.raises(EvaluationError, match="0/1 label column holds 0 or 1"):
        flags.truth({"news": "maybe", "sport": "0", "tech": "0"})
    with pytest.raises(EvaluationError) as caught:
        plan_evaluation("bert", tasks, {"text_column": "text", "multi_label": True}, label_columns=["news", "sport"])
    assert caught.value.code == "label_columns_mismatch" and "missing 'tech'" in caught.value.message


def test_pairs_only_for_pair_models_and_default_to_the_models_pair_column():
    with pytest.raises(EvaluationError) as caught:
        plan_evaluation("bert", {"y": ["a", "b"]}, SINGLE, text_pair_column="other")
    assert caught.value.code == "text_pair_mismatch"
    plan = plan_evaluation("bert", {"y": ["a", "b"]}, {**SINGLE, "text_pair_column": "hypothesis"})
    assert plan.columns == ["text", "hypothesis", "sentiment"]


def test_a_template_model_reads_the_template_columns_unless_a_text_column_is_given():
    params = {"text_template": "{speaker}: {text}", "label_column": "act", "label_columns": ["act"]}
    plan = plan_evaluation("bert", {"act": ["q", "a"]}, params)
    assert plan.columns == ["speaker", "text", "act"] and plan.text_column is None
    assert plan_evaluation("bert", {"act": ["q", "a"]}, params, text_column="line").columns == ["line", "act"]


def test_check_labels_lists_every_unknown_label_once():
    plan = plan_evaluation("bert", {"sentiment": ["neg", "pos"]}, SINGLE)
    plan.check_labels([{"sentiment": "pos"}, {"sentiment": ""}])  # known, or empty: fine
    with pytest.raises(EvaluationError) as caught:
        plan.check_labels([{"sentiment": "joy"}, {"sentiment": "anger"}, {"sentiment": "joy"}])
    assert caught.value.code == "unknown_labels" and caught.value.labels == ["anger", "joy"]
