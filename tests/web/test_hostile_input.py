"""Hostile input gets a clear 4xx (or is handled), never a 500, on SQLite and on PostgreSQL.

PostgreSQL is the stricter one: BIGINT ids end at 2^63 - 1, its text types refuse NUL characters, its JSON refuses
NaN and Infinity. Each backend is built by the Alembic migrations (as production builds it) and gets every input
below, with the exact status and error code asserted. Also here: /predict's bound on waiting calls.
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select

from core import jobs as job_states
from core import runtime
from core.config import Settings
from core.db import db
from core.schema import LABEL_MAX, Dataset, Job

from . import factories as f
from .helpers import assert_error
from tests.factories import api_client, migrate

BIG = str(2**64)  # past BIGINT
JUST_OVER = str(2**63)  # the first integer PostgreSQL's BIGINT cannot hold
HUGE = "9" * 5000  # past Python's 4,300-digit limit on int()
TRAIN = '{"dataset_id": %s, "text_column": "text", "label_column": "label"%s}'


@dataclass
class Case:
    """One hostile request and the answer it must get (``code`` None: an HTML page, status only)."""

    name: str
    method: str
    path: str
    status: int
    code: str | None
    kwargs: dict = field(default_factory=dict)


def json_body(text: str) -> dict:
    return {"data": text.encode("utf-8", "surrogatepass"), "content_type": "application/json"}


def upload(name: str, content: bytes = b"text,label\na,pos\nb,neg\n") -> dict:
    return {"data": {"file": (io.BytesIO(content), "hostile.csv"), "name": name}, "content_type": "multipart/form-data"}


def cases(ids: dict) -> list[Case]:
    """Every hostile input, given the ids of a real dataset, model, classify job and long-label dataset."""
    ds, model, job, long_ds = ids["dataset"], ids["model"], ids["job"], ids["long_labels"]
    return [
        # ids and offsets past BIGINT: in the path (404), the query (400) and JSON bodies (422)
        Case("model id 2^64", "get", f"/api/v1/models/{BIG}", 404, "not_found"),
        Case("model id 2^63", "get", f"/api/v1/models/{JUST_OVER}", 404, "not_found"),
        Case("model id 20 digits", "get", "/api/v1/models/99999999999999999999", 404, "not_found"),
        Case("model id 5000 digits", "get", f"/api/v1/models/{HUGE}", 404, "not_found"),
        Case("patch model 2^64", "patch", f"/api/v1/models/{BIG}", 404, "not_found", {"json": {"quantize": True}}),
        Case("dataset id 2^64", "get", f"/api/v1/datasets/{BIG}", 404, "not_found"),
        Case("dataset page id 2^64", "get", f"/datasets/{BIG}", 404, None),
        Case("model page id 2^64", "get", f"/models/{BIG}", 404, None),
        Case("jobs model_id 2^64", "get", f"/api/v1/jobs?model_id={BIG}", 400, "invalid_parameter"),
        Case("jobs dataset_id 2^63", "get", f"/api/v1/jobs?dataset_id={JUST_OVER}", 400, "invalid_parameter"),
        Case("jobs offset 2^64", "get", f"/api/v1/jobs?offset={BIG}", 400, "invalid_parameter"),
        Case("jobs offset 5000 digits", "get", f"/api/v1/jobs?offset={HUGE}", 400, "invalid_parameter"),
        Case("models offset 2^64", "get", f"/api/v1/models?offset={BIG}", 400, "invalid_parameter"),
        Case("datasets offset 2^64", "get", f"/api/v1/datasets?offset={BIG}", 400, "invalid_parameter"),
        Case("predictions offset 2^64", "get", f"/api/v1/jobs/{job}/predictions?offset={BIG}", 400, "invalid_parameter"),
        Case("train dataset_id 2^64", "post", "/api/v1/jobs/train", 422, "validation_error", json_body(TRAIN % (BIG, ""))),
        Case("train seed 2^64", "post", "/api/v1/jobs/train", 422, "validation_error",
             json_body(TRAIN % (ds, f', "seed": {BIG}'))),
        Case("train 5000-digit int", "post", "/api/v1/jobs/train", 400, "invalid_json", json_body(TRAIN % (HUGE, ""))),
        Case("classify model_id 2^64", "post", "/api/v1/jobs/classify", 422, "validation_error",
             {"json": {"model_id": 2**64, "texts": ["a"]}}),
        Case("classify dataset_id 2^63", "post", "/api/v1/jobs/classify", 422, "validation_error",
             {"json": {"model_id": model, "dataset_id": 2**63, "text_column": "text"}}),
        Case("predict model_id 2^64", "post", "/api/v1/predict", 422, "validation_error",
             {"json": {"model_id": 2**64, "texts": ["a"]}}),
        # deeply nested JSON
        Case("100k nested lists", "post", "/api/v1/jobs/train", 400, "invalid_json", json_body("[" * 100_000)),
        Case("100k nested objects", "post", "/api/v1/jobs/classify", 400, "invalid_json",
             json_body('{"a":' * 100_000)),
        Case("nesting within the recursion limit", "post", "/api/v1/jobs/train", 400, "invalid_json",
             json_body(TRAIN % (ds, ', "name": ' + "[" * 500 + "]" * 500))),
        # NaN and Infinity (PostgreSQL's JSON refuses them)
        Case("NaN literal", "post", "/api/v1/jobs/train", 400, "invalid_json",
             json_body(TRAIN % (ds, ', "class_weights": [NaN, 1]'))),
        Case("Infinity literal", "post", "/api/v1/jobs/train", 400, "invalid_json",
             json_body(TRAIN % (ds, ', "task_weights": {"label": Infinity}'))),
        Case("-Infinity literal", "post", "/api/v1/predict", 400, "invalid_json",
             json_body('{"model_id": %s, "texts": ["a"], "timeout_s": -Infinity}' % model)),
        Case("1e999 overflows to inf", "post", "/api/v1/jobs/train", 400, "invalid_json",
             json_body(TRAIN % (ds, ', "class_weights": [1e999, 1]'))),
        Case("predict timeout over the bound", "post", "/api/v1/predict", 422, "validation_error",
             {"json": {"model_id": model, "texts": ["a"], "timeout_s": 301}}),
        # NUL characters and lone surrogates: names, columns, texts, weights' keys, form fields, paths, queries
        Case("train name with NUL", "post", "/api/v1/jobs/train", 422, "validation_error",
             {"json": {"dataset_id": ds, "text_column": "text", "label_column": "label", "name": "m\x00"}}),
        Case("train column with NUL", "post", "/api/v1/jobs/train", 422, "validation_error",
             {"json": {"dataset_id": ds, "text_column": "te\x00xt", "label_column": "label"}}),
        Case("task_weights key with NUL", "post", "/api/v1/jobs/train", 422, "validation_error",
             {"json": {"dataset_id": ds, "text_column": "text", "label_columns": ["label", "topic"],
                       "family": "multitask", "task_weights": {"label\x00": 1}}}),
        Case("text with NUL", "post", "/api/v1/jobs/classify", 422, "validation_error",
             {"json": {"model_id": model, "texts": ["ok", "a\x00b"]}}),
        Case("predict text with NUL", "post", "/api/v1/predict", 422, "validation_error",
             {"json": {"model_id": model, "texts": ["a\x00"]}}),
        Case("text with a lone surrogate", "post", "/api/v1/jobs/classify", 400, "invalid_json",
             json_body('{"model_id": %s, "texts": ["a\\ud800b"]}' % model)),
        Case("name with a lone surrogate", "post", "/api/v1/jobs/train", 400, "invalid_json",
             json_body(TRAIN % (ds, ', "name": "\\udfff"'))),
        Case("dataset name with NUL", "post", "/api/v1/datasets", 422, "validation_error", upload("a\x00b")),
        Case("dataset name too long", "post", "/api/v1/datasets", 422, "validation_error", upload("n" * 201)),
        Case("upload page name with NUL", "post", "/datasets", 400, None, upload("a\x00b")),
        Case("JSONL value with a lone surrogate", "post", "/api/v1/datasets", 400, "invalid_jsonl",
             {"data": {"file": (io.BytesIO(b'{"text": "a\\udc00", "label": "x"}\n'), "h.jsonl")},
              "content_type": "multipart/form-data"}),
        Case("job id with NUL", "get", "/api/v1/jobs/abc%00def", 404, "not_found"),
        Case("cancel job id with NUL", "post", "/api/v1/jobs/abc%00def/cancel", 404, "not_found"),
        Case("predictions job id with NUL", "get", "/api/v1/jobs/abc%00def/predictions", 404, "not_found"),
        Case("export job id with NUL", "get", "/api/v1/jobs/abc%00def/export", 404, "not_found"),
        Case("job page id with NUL", "get", "/jobs/abc%00def", 404, None),
        Case("job id not a UUID", "get", "/api/v1/jobs/not-a-uuid", 404, "not_found"),
        Case("job id 5000 characters", "get", "/api/v1/jobs/" + "x" * 5000, 404, "not_found"),
        Case("label filter with NUL", "get", f"/api/v1/jobs/{job}/predictions?label=a%00", 400, "invalid_parameter"),
        Case("page label filter with NUL", "get", f"/jobs/{job}?label=%00", 400, None),
        Case("NUL in a parameter name", "get", "/api/v1/jobs?a%00=1", 400, "invalid_parameter"),
        Case("label filter 10k characters", "get", f"/api/v1/jobs/{job}/predictions?label={'l' * 10_000}", 200, None),
        # labels longer than the predictions' label column
        Case("training labels too long", "post", "/api/v1/jobs/train", 422, "label_too_long",
             {"json": {"dataset_id": long_ds, "text_column": "text", "label_column": "label"}}),
        # media types: a cross-site form must not drive the API
        Case("text/plain JSON", "post", "/api/v1/jobs/train", 415, "unsupported_media_type",
             {"data": TRAIN % (ds, ""), "content_type": "text/plain"}),
        Case("urlencoded form", "post", "/api/v1/predict", 415, "unsupported_media_type",
             {"data": {"model_id": str(model), "texts": "a"}}),
        Case("no Content-Type", "patch", f"/api/v1/models/{model}", 415, "unsupported_media_type",
             {"data": '{"quantize": true}'}),
    ]


def _build(url: str, tmp_path):
    migrate(url)
    settings = Settings(
        database_url=url, redis_url="redis://127.0.0.1:6379/15", model_store=str(tmp_path / "models"), device="cpu",
        secret_key="test-secret", celery_eager=True, predict_timeout_s=0.0,
    )
    runtime.configure(settings)
    from web import create_app

    return create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_client(request, tmp_path):
    """An admin's client of an app on a freshly migrated database of each backend."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_schema_url")
    else:
        url = f"sqlite:///{tmp_path / 'hostile.db'}"
    app = _build(url, tmp_path)
    try:
        yield api_client(app)
    finally:
        db.dispose()


def _rows(table) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(table))


def test_hostile_inputs_get_exact_4xx(migrated_client, sent, subtests):
    client = migrated_client
    long_label = "L" * (LABEL_MAX + 1)
    ids = {
        "dataset": f.make_dataset(),
        "model": f.make_model(),
        "long_labels": f.make_dataset(f"text,label\na,{long_label}\nb,neg\nc,{long_label}\n".encode()),
    }
    ids["job"] = f.make_classify_job(ids["model"], ["a"])
    datasets, jobs = _rows(Dataset), _rows(Job)
    for case in cases(ids):
        with subtests.test(msg=case.name):
            response = getattr(client, case.method)(case.path, **case.kwargs)
            if case.code is None:
                assert response.status_code == case.status, (case.name, response.get_data(as_text=True)[:300])
            else:
                assert_error(response, case.status, case.code)
    assert (_rows(Dataset), _rows(Job)) == (datasets, jobs), "a rejected request wrote a row"
    assert sent == []


@pytest.mark.parametrize("path", [
    "/jobs?page=" + "9" * 30,
    "/jobs?page=%C2%B2",  # "²": str.isdigit() says yes, int() says no
    "/jobs/{job}?page=" + "9" * 30,
    f"/train?dataset_id={HUGE}",
    "/classify?model_id=%C2%B2",
], ids=["jobs-page-30-digits", "jobs-page-superscript", "job-page-30-digits", "train-5000-digits",
        "classify-superscript"])
def test_pages_take_any_number_in_the_query(migrated_client, path):
    """Page numbers and preselected ids nobody can reach still render the page (page 1 / nothing preselected)."""
    f.make_dataset()
    job = f.make_classify_job(f.make_model(), ["a"])
    response = migrated_client.get(path.format(job=job))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


# ---------------------------------------------------------------- /predict waiting slots


def _predict_client(settings: Settings, waiters: int):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(predict_max_waiters=waiters)})
    return api_client(app)


def _cancel_later(job_id: str, delay_s: float = 0.3) -> None:
    """Plays a worker that ends the job a moment after it was announced (from another thread)."""

    def cancel():
        with db.session() as session:
            job_states.cancel(session, job_id)

    threading.Timer(delay_s, cancel).start()


def test_predict_over_the_waiting_limit_answers_202_at_once(settings, sent):
    client = _predict_client(settings, waiters=1)
    model_id = f.make_model()
    first: dict = {}

    def wait_in_the_only_slot():
        first["response"] = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"], "timeout_s": 60})

    waiter = threading.Thread(target=wait_in_the_only_slot)
    waiter.start()
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:  # the slot is taken before the job is created and announced
        time.sleep(0.01)
    assert len(sent) == 1, "the first /predict never created its job"

    second = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["b"], "timeout_s": 60})
    assert second.status_code == 202, second.json
    assert second.json["status"] == "queued" and second.json["id"] == sent[1][0]
    assert second.headers["Location"] == f"/api/v1/jobs/{sent[1][0]}"
    assert waiter.is_alive(), "the first call still waits in its slot"

    assert client.post(f"/api/v1/jobs/{sent[0][0]}/cancel").status_code == 200
    waiter.join(30)
    assert_error(first["response"], 409, "job_cancelled")

    # the slot is free again: the next call waits for its job (ended by a "worker" after it started waiting)
    sent.workers.append(lambda job_id, _type: _cancel_later(job_id))
    assert_error(client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["c"], "timeout_s": 60}),
                 409, "job_cancelled")


def test_predict_with_no_waiting_slots_never_waits(settings, sent):
    client = _predict_client(settings, waiters=0)
    model_id = f.make_model()
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"], "timeout_s": 60})
    assert response.status_code == 202 and response.json["status"] == "queued"


def test_predict_text_count_and_size_are_bounded(settings, sent):
    client = _predict_client(settings, waiters=1)
    model_id = f.make_model()
    limits = settings
    error = assert_error(client.post("/api/v1/predict", json={
        "model_id": model_id, "texts": ["a"] * (limits.max_texts_per_job + 1)}), 422, "validation_error")
    assert f"at most {limits.max_texts_per_job} texts" in error["message"]
    error = assert_error(client.post("/api/v1/predict", json={
        "model_id": model_id, "texts": ["x" * (limits.max_text_chars + 1)]}), 422, "validation_error")
    assert f"limit is {limits.max_text_chars}" in error["message"]
    assert sent == []
