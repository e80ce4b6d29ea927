"""The task-type registry (core.task_types): names, the default, and text classification's declaration driving what
a prediction stores, how it is serialised and exported -- the same for rows stored before ``result`` existed."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from core import task_types
from core.options import TrainConfig, TrainRequest, _check_task_type
from core.schema import Prediction
from core.task_types.text_classification import TextClassification, flag_cell, row_labels
from web.serializers import prediction_to_dict

TC = "text-classification"
SINGLE = {"label": "pos", "score": 0.1 + 0.2, "scores": {"neg": 1 - (0.1 + 0.2), "pos": 0.1 + 0.2}}
MULTI = {"label": "sport", "score": 0.9, "scores": {"news": 0.6, "sport": 0.9, "tech": 0.1}, "labels": ["sport", "news"]}
TASKS = {"tasks": {"label": {"label": "pos", "score": 0.7, "scores": {"neg": 0.3, "pos": 0.7}},
                   "topic": {"label": "film", "score": 0.6, "scores": {"film": 0.6, "music": 0.4}}}}


def test_registry_names_the_default_first():
    assert task_types.names()[0] == TC and task_types.DEFAULT == TC
    kind = task_types.get(None)
    assert isinstance(kind, TextClassification) and task_types.get(TC) is kind
    assert kind.pipeline_tag == "text-classification" and kind.default_metric in kind.metrics
    assert task_types.of_params(None) is kind and task_types.of_params({"family": "bert"}) is kind
    with pytest.raises(KeyError):
        task_types.get("summarization")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        task_types.register(TextClassification)


def test_train_request_takes_only_registered_task_types():
    body = {"dataset_id": 1, "text_column": "t", "label_column": "l"}
    assert TrainRequest.model_validate(body).task_type == TC
    assert TrainRequest.model_validate({**body, "task_type": TC}).model_dump()["task_type"] == TC
    with pytest.raises(ValidationError, match="task_type"):
        TrainRequest.model_validate({**body, "task_type": "summarization"})


class _Tagging(task_types.TaskType):
    """A stand-in second task type: reads tokens, none of text classification's options."""

    name = "test-tagging"
    pipeline_tag = "token-classification"
    label = "Tagging"
    default_metric = "f1"
    metrics = ("f1",)
    request_fields = frozenset({"text_column"})

    def prediction_fields(self, prediction):
        return {"tags": prediction.result["tags"]}


@pytest.fixture
def tagging(monkeypatch):
    monkeypatch.setitem(task_types._REGISTRY, _Tagging.name, _Tagging())
    return _Tagging.name


def _config(**fields) -> TrainConfig:
    config = TrainConfig.model_validate({"text_column": "t", "label_column": "l", **fields})
    config.task_type = "test-tagging"  # past the Literal, as a registered second task type would be
    return config


def test_data_fields_of_another_task_type_are_refused(tagging):
    with pytest.raises(ValueError, match="label_column does not apply to the test-tagging task type"):
        _check_task_type(_config())


@pytest.mark.parametrize("fields, message", [
    ({"multi_label": True}, "multi_label applies to the text-classification task type, not 'test-tagging'"),
    ({"pooling": "mean"}, "pooling applies to the text-classification task type"),
])
def test_options_of_another_task_type_are_refused(tagging, fields, message):
    config = _config(**fields)
    config.label_column = config.label_columns = None  # only the option is left to refuse
    with pytest.raises(ValueError, match=message):
        _check_task_type(config)


def test_a_metric_the_task_type_does_not_report_is_refused(tagging):
    config = _config()
    config.label_column = config.label_columns = None
    with pytest.raises(ValueError, match="metric 'macro_f1' is not one the test-tagging task type reports"):
        _check_task_type(config)
    config.metric = "f1"
    _check_task_type(config)


def test_the_task_type_decides_a_predictions_fields(tagging):
    row = Prediction(index=3, text="Ada Lovelace", label="", score=0.0, scores={}, result={"tags": ["B", "I"]},
                     row_id="r3")
    assert prediction_to_dict(row, "test-tagging") == {"index": 3, "text": "Ada Lovelace", "tags": ["B", "I"],
                                                       "id": "r3"}


def _rows(result: dict) -> tuple[Prediction, Prediction]:
    """The same prediction stored now (with ``result``) and before migration 0012 (``result`` NULL)."""
    columns = task_types.get(TC).prediction_columns(result)
    new = Prediction(index=0, text="t", text_pair="p", row_id="7", **columns)
    old = Prediction(index=0, text="t", text_pair="p", row_id="7", **{**columns, "result": None})
    return new, old


@pytest.mark.parametrize("result, fields", [
    (SINGLE, ["label", "score", "scores"]),
    (MULTI, ["labels", "scores"]),
    (TASKS, ["tasks"]),
])
def test_old_rows_serialise_and_export_as_new_ones(result, fields):
    new, old = _rows(result)
    expected = {"index": 0, "text": "t", "text_pair": "p", **{k: result[k] for k in fields}, "id": "7"}
    for row in (new, old):
        got = prediction_to_dict(row)
        assert got == expected and list(got) == list(expected)  # the same fields in the same order
    layout = task_types.get(TC).export_layout(model_tasks=None, model_params={}, first=old, with_id=True,
                                              with_pair=True)
    assert layout.row(new) == layout.row(old)
    assert layout.columns[:4] == ["index", "id", "text", "text_pair"]


def test_stored_columns_keep_the_legacy_columns_filled():
    columns = task_types.get(TC).prediction_columns(MULTI)
    assert columns["result"] == MULTI
    assert (columns["label"], columns["score"], columns["labels"], columns["tasks"]) == ("sport", 0.9,
                                                                                          ["sport", "news"], None)
    columns = task_types.get(TC).prediction_columns(TASKS)
    assert columns["result"] == TASKS and columns["tasks"] == TASKS["tasks"] and columns["label"] == "pos"


def test_export_layout_follows_the_rows_then_the_model():
    kind = task_types.get(TC)
    model_tasks = {"label": ["neg", "pos"], "topic": ["film", "music"]}
    layout = kind.export_layout(model_tasks=model_tasks, model_params={"family": "multitask"}, first=None,
                                with_id=False, with_pair=False)
    assert layout.columns == ["index", "text", "label_label", "label_score", "label_score_neg", "label_score_pos",
                              "topic_label", "topic_score", "topic_score_film", "topic_score_music"]
    layout = kind.export_layout(model_tasks={"label": ["neg", "pos"]}, model_params={"multi_label": True},
                                first=None, with_id=False, with_pair=False)
    assert layout.columns == ["index", "text", "labels", "score_neg", "score_pos"]
    new, _ = _rows(SINGLE)
    layout = kind.export_layout(model_tasks=None, model_params={}, first=new, with_id=False, with_pair=False)
    assert layout.columns == ["index", "text", "label", "score", "score_neg", "score_pos"]


def test_label_cells_have_one_owner():
    assert [flag_cell(v) for v in ("1", " Yes ", "true", "0", "no", "", None)] == [True] * 3 + [False] * 2 + [None] * 2
    with pytest.raises(ValueError):
        flag_cell("maybe")
    config = TrainConfig.model_validate({"text_column": "t", "label_columns": ["a", "b"], "multi_label": True})
    assert row_labels({"a": "1", "b": "0"}, config) == ["a"]
    assert row_labels({"a": "1", "b": ""}, config) is None and row_labels({"a": "x", "b": "0"}, config) is None
