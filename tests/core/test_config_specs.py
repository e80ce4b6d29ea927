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


def test_pooling_option_belongs_to_bert_and_multitask():
    assert TrainRequest(dataset_id=1, text_column="t", label_column="l", pooling="mean").pooling == "mean"
    with pytest.raises(ValidationError):
        TrainRequest(dataset_id=1, text_column="t", label_column="l", family="bert_lstm", pooling="mean")


def test_texts_are_kept_exactly_and_stored_params_ignore_deployment_limits():
    request = ClassifyRequest.model_validate({"model_id": 1, "texts": ["  padded text \n"]})
    assert request.texts == ["  padded text \n"]
    many = {"model_id": 1, "texts": ["x"] * 12_000}  # accepted by a deployment with a higher MAX_TEXTS_PER_JOB
    assert len(ClassifyRequest.from_job_params(many).texts) == 12_000


def test_every_train_request_field_the_training_loop_knows_reaches_it():
    from dataclasses import fields

    from worker.runner import train_config
    from worker.training import TrainConfig

    request = TrainRequest(dataset_id=1, text_column="t", label_column="l", pooling="cls", dropout=0.2, seed=7)
    config = train_config(request)
    assert (config.pooling, config.dropout, config.seed, config.label_columns) == ("cls", 0.2, 7, ["l"])
    missing = {f.name for f in fields(TrainConfig)} - set(TrainRequest.model_fields)
    assert not missing, f"TrainConfig fields the API cannot set: {missing}"
