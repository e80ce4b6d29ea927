"""Settings from the environment and the shared request models."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config import Settings
from core.specs import ClassifyRequest, PredictRequest, TrainRequest


def test_settings_defaults_and_env_overrides(tmp_path):
    default = Settings.from_env({})
    assert default.database_url.startswith("sqlite:///") and default.device == "auto"
    s = Settings.from_env(
        {"DATABASE_URL": "postgresql+psycopg://x@h/db", "MAX_UPLOAD_MB": "3", "CELERY_EAGER": "true",
         "PREDICT_TIMEOUT_S": "2.5", "DEVICE": "cpu", "MODEL_STORE": str(tmp_path)}
    )
    assert s.database_url == "postgresql+psycopg://x@h/db" and s.max_upload_bytes == 3 * 1024 * 1024
    assert s.celery_eager is True and s.predict_timeout_s == 2.5 and s.model_store == str(tmp_path)


@pytest.mark.parametrize("env", [{"DEVICE": "tpu"}, {"MAX_UPLOAD_MB": "lots"}])
def test_bad_settings_are_refused(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_train_request_normalises_label_columns():
    single = TrainRequest(dataset_id=1, text_column="text", label_column="sentiment")
    assert single.label_columns == ["sentiment"] and single.family == "bert"
    multi = TrainRequest(dataset_id=1, text_column="text", family="multitask", label_columns=["sentiment", "topic"],
                         task_weights={"topic": 0.5})
    assert multi.label_column == "sentiment"
    # what the worker reads back from the job's params is what the web validated
    assert TrainRequest.model_validate(multi.model_dump()) == multi


@pytest.mark.parametrize(
    "body",
    [
        {"dataset_id": 1, "text_column": "t"},  # no label column
        {"dataset_id": 1, "text_column": "t", "label_column": "l", "family": "gpt"},
        {"dataset_id": 1, "text_column": "t", "label_columns": ["a", "b"]},  # several labels, not multitask
        {"dataset_id": 1, "text_column": "t", "label_columns": ["a"], "family": "multitask"},
        {"dataset_id": 1, "text_column": "t", "label_columns": ["a", "a"], "family": "multitask"},
        {"dataset_id": 1, "text_column": "t", "label_column": "l", "epochs": 0},
        {"dataset_id": 1, "text_column": "t", "label_column": "l", "learning_rate": -1},
        {"dataset_id": 1, "text_column": "t", "label_column": "l", "surprise": 1},
        {"dataset_id": 1, "text_column": "t", "label_columns": ["a", "b"], "family": "multitask",
         "task_weights": {"c": 1.0}},
    ],
)
def test_train_request_rejects(body):
    with pytest.raises(ValidationError):
        TrainRequest.model_validate(body)


def test_classify_request_limits():
    ok = ClassifyRequest.model_validate({"model_id": 1, "texts": ["good", "bad"]})
    assert ok.texts == ["good", "bad"]
    for texts, context in ([], {}), (["a", "  "], {}), (["a"] * 4, {"max_texts": 3}), (["abcd"], {"max_text_chars": 3}):
        with pytest.raises(ValidationError):
            ClassifyRequest.model_validate({"model_id": 1, "texts": texts}, context=context)
    assert PredictRequest.model_validate({"model_id": 1, "texts": ["x"], "timeout_s": 5}).timeout_s == 5
