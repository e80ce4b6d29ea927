"""Each training option is declared once (core.options): a new one reaches validation, the model's options, the
train form and the JSON schema the OpenAPI document is built from, with no other edit."""
from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, ValidationError

import core.options as options
from core.options import Opt, TrainRequest, model_options, option_fields


@pytest.fixture
def extended(monkeypatch):
    """TrainRequest plus one new model option for bert_lstm, installed where every reader looks for it."""

    class Extended(TrainRequest):
        attention_window: Annotated[int, Opt("Attention window", group="model", families=("bert_lstm",),
                                             model=True)] = Field(default=8, ge=1, le=64)

    monkeypatch.setattr(options, "TrainConfig", Extended)
    return Extended


BASE = {"dataset_id": 1, "text_column": "text", "label_column": "label"}


def test_a_new_option_reaches_validation_model_form_and_schema(extended, app):
    request = extended.model_validate({**BASE, "family": "bert_lstm", "attention_window": 16})
    assert model_options(request)["attention_window"] == 16
    assert "attention_window" not in model_options(extended.model_validate(BASE))  # not a bert option
    with pytest.raises(ValidationError, match="attention_window applies to the bert_lstm family, not 'bert'"):
        extended.model_validate({**BASE, "attention_window": 16})
    with pytest.raises(ValidationError, match="less than or equal to 64"):
        extended.model_validate({**BASE, "family": "bert_lstm", "attention_window": 65})
    assert [name for name, _, _ in option_fields("model")][-1] == "attention_window"

    from web.forms import TrainFormBase, with_option_fields

    with app.test_request_context():
        form = with_option_fields(TrainFormBase)(meta={"csrf": False})
        assert form.attention_window.label.text == "Attention window" and form.attention_window.data == 8
        assert form.attention_window.render_kw["data-families"] == "bert_lstm"
        assert form["attention_window"] in dict(form.option_groups())["Model"]

    schema = extended.model_json_schema()["properties"]["attention_window"]
    assert schema["x-families"] == ["bert_lstm"] and schema["maximum"] == 64 and schema["default"] == 8


def test_options_that_do_not_apply_to_the_family_are_refused_with_the_reason():
    with pytest.raises(ValidationError, match="multi_label applies to the bert, distilbert and bert_lstm families, "
                                              r"not 'multitask' \(multitask keeps single-label tasks\)"):
        TrainRequest.model_validate({**BASE, "family": "multitask", "label_column": None,
                                     "label_columns": ["a", "b"], "multi_label": True})
    # stored params hold every option at its default: they must validate again in the worker, whatever the family
    stored = TrainRequest.model_validate({**BASE, "family": "multitask", "label_column": None,
                                          "label_columns": ["a", "b"]}).model_dump(mode="json")
    assert TrainRequest.model_validate(stored).family == "multitask"


@pytest.mark.parametrize("body, message", [
    ({"text_column": None, "text_template": "{a.b}"}, "may only name a column"),
    ({"text_column": None, "text_template": "{0}"}, "must name a column"),
    ({"text_column": None, "text_template": "no fields"}, "names no column"),
    ({"text_template": "{speaker}"}, "not both"),
    ({"text_column": None}, "give text_column"),
    ({"label_separator": ","}, "label_separator applies to multi_label"),
    ({"multi_label": True, "label_smoothing": 0.1}, "label_smoothing applies to single-label"),
    ({"early_stopping_patience": 2, "validation_split": 0}, "needs validation data"),
    ({"class_weights": [0, 0]}, "not all 0"),
    ({"label_columns": ["a", "b"], "label_column": None}, "exactly one label column"),
    ({"text_pair_column": "text"}, "must differ from text_column"),
])
def test_bad_combinations_are_refused(body, message):
    with pytest.raises(ValidationError, match=message):
        TrainRequest.model_validate({k: v for k, v in {**BASE, **body}.items() if v is not None})


def test_multi_label_and_template_requests():
    request = TrainRequest.model_validate({**BASE, "text_column": None, "text_template": "{speaker}: {text}",
                                           "label_column": None, "label_columns": ["a", "b"], "multi_label": True})
    assert request.text_columns() == ["speaker", "text"] and request.label_columns == ["a", "b"]
    config = request.config()
    assert type(config).__name__ == "TrainConfig" and not hasattr(config, "dataset_id")


def test_class_weights_name_the_tasks_of_the_task_shape():
    multi = {**BASE, "label_column": None, "label_columns": ["a", "b"], "multi_label": True}
    assert TrainRequest.model_validate({**multi, "class_weights": {"labels": [1.0, 2.0]}}).class_weights
    with pytest.raises(ValidationError, match="unknown tasks: a"):
        TrainRequest.model_validate({**multi, "class_weights": {"a": [1.0, 2.0]}})
    assert TrainRequest.model_validate({**BASE, "class_weights": {"label": "balanced"}}).class_weights


def test_old_params_whitespace_separators_and_template_size():
    # params stored before pooling defaulted to "mean" hold null for every family: they must validate again
    assert TrainRequest.model_validate({**BASE, "family": "bert_lstm", "pooling": None}).pooling is None
    tab = TrainRequest.model_validate({**BASE, "multi_label": True, "label_separator": "\t"})
    assert tab.label_separator == "\t"  # not stripped away
    with pytest.raises(ValidationError, match="at most 10 fields"):
        TrainRequest.model_validate({**BASE, "text_column": None, "text_template": "{text}" * 11})
