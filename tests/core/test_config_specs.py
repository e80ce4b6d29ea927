"""Settings from the environment and the shared request models."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config import Settings
from core.specs import MAX_SQL_ID, ClassifyRequest, PredictRequest, TokenCreate, TrainRequest, UserCreate


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
    assert TrainRequest(dataset_id=1, text_column="t", label_column="l", pooling="cls").pooling == "cls"
    with pytest.raises(ValidationError, match="pooling applies to the bert and multitask families"):
        TrainRequest(dataset_id=1, text_column="t", label_column="l", family="bert_lstm", pooling="cls")


def test_texts_are_kept_exactly_and_stored_params_ignore_deployment_limits():
    request = ClassifyRequest.model_validate({"model_id": 1, "texts": ["  padded text \n"]})
    assert request.texts == ["  padded text \n"]
    many = {"model_id": 1, "texts": ["x"] * 12_000}  # accepted by a deployment with a higher MAX_TEXTS_PER_JOB
    assert len(ClassifyRequest.from_job_params(many).texts) == 12_000


def test_the_training_loop_reads_the_request_declaration_itself():
    """TrainRequest extends the loop's TrainConfig: no field is re-declared, so none can drift apart."""
    from ml.config import TrainConfig
    from worker.jobs.train import train_config

    assert TrainConfig is TrainRequest.__mro__[1]
    request = TrainRequest(dataset_id=1, text_column="t", label_column="l", pooling="cls", dropout=0.2, seed=7)
    config = train_config(request)
    assert (config.pooling, config.dropout, config.seed, config.label_columns) == ("cls", 0.2, 7, ["l"])
    assert set(config.model_dump()) == set(TrainConfig.model_fields)


def _error(model, data: dict) -> dict:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return info.value.errors()[0]


TRAIN = {"dataset_id": 1, "text_column": "text", "label_column": "label"}


@pytest.mark.parametrize(
    "model, data, loc",
    [
        (TrainRequest, {**TRAIN, "name": "model\x00"}, ("name",)),
        (TrainRequest, {**TRAIN, "label_column": "la\x00bel"}, ("label_column",)),
        (TrainRequest, {**TRAIN, "family": "multitask", "label_columns": ["label", "topic"],
                        "task_weights": {"topic": 1, "la\x00": 2}}, ("task_weights", "la\x00")),
        (ClassifyRequest, {"model_id": 1, "texts": ["fine", "not\x00fine"]}, ("texts", 1)),
        (PredictRequest, {"model_id": 1, "texts": ["\x00"]}, ("texts", 0)),
        (UserCreate, {"username": "bob", "password": "pass\x00word"}, ("password",)),
        (TokenCreate, {"name": "ci\x00"}, ("name",)),
    ],
)
def test_nul_characters_are_refused_where_they_are(model, data, loc):
    """PostgreSQL text cannot hold NUL: every request model refuses it, naming the field (and list index)."""
    error = _error(model, data)
    assert error["type"] == "nul_character" and error["loc"] == loc and "NUL" in error["msg"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(value):
    """PostgreSQL's JSON refuses NaN/Infinity, and params are stored as JSON."""
    with pytest.raises(ValidationError) as info:  # a union: one error per member, the list member's is ours
        TrainRequest.model_validate({**TRAIN, "class_weights": [value, 1.0]})
    assert any(e["type"] == "finite_number" and e["loc"][0] == "class_weights" and e["loc"][-1] == 0
               for e in info.value.errors())
    assert _error(TrainRequest, {**TRAIN, "task_weights": {"label": value}})["type"] == "finite_number"
    assert _error(PredictRequest, {"model_id": 1, "texts": ["a"], "timeout_s": value})["type"] == "finite_number"


@pytest.mark.parametrize("model, key", [(TrainRequest, "dataset_id"), (ClassifyRequest, "model_id")])
def test_sql_ids_end_below_2_63(model, key):
    body = {**TRAIN} if model is TrainRequest else {"model_id": 1, "texts": ["a"]}
    assert getattr(model.model_validate({**body, key: MAX_SQL_ID}), key) == MAX_SQL_ID
    assert _error(model, {**body, key: MAX_SQL_ID + 1})["type"] == "less_than_equal"
    assert _error(model, {**body, key: True})["type"] == "int_type"  # strict: true is not the id 1


def test_user_create():
    user = UserCreate.model_validate({"username": "ann.o-k_1@corp", "password": "  spaced pass  "})
    assert (user.username, user.password, user.is_admin) == ("ann.o-k_1@corp", "  spaced pass  ", False)
    assert UserCreate.model_validate({"username": "root", "is_admin": True}).password is None
    for bad in ["", "has space", "semi;colon", "ünïcode", "x" * 65]:
        assert _error(UserCreate, {"username": bad})["loc"] == ("username",), bad
    assert _error(UserCreate, {"username": "bob", "password": "short"})["type"] == "string_too_short"
    assert _error(UserCreate, {"username": "bob", "password": "p" * 257})["type"] == "string_too_long"
    assert _error(UserCreate, {"username": "bob", "is_admin": "yes"})["type"] == "bool_type"
    assert _error(UserCreate, {"username": "bob", "role": "admin"})["type"] == "extra_forbidden"


def test_token_create():
    assert TokenCreate.model_validate({"name": " laptop "}).name == "laptop"
    assert _error(TokenCreate, {"name": ""})["type"] == "string_too_short"
    assert _error(TokenCreate, {"name": "n" * 101})["type"] == "string_too_long"
    assert _error(TokenCreate, {})["type"] == "missing"
