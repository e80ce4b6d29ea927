"""POST /api/v1/predict: a classify job on the same queue, waited for by polling SQL."""
from __future__ import annotations

from pathlib import Path

import threading

from . import factories as f
from .helpers import assert_error
from tests.factories import api_client


def test_succeeds_when_the_worker_finishes_in_time(client, sent):
    model_id = f.make_model()

    def worker(job_id, job_type):  # plays the worker, later, from another thread
        def run():
            f.start(job_id)
            f.add_single_task_predictions(job_id, ["good", "bad"])
            f.succeed(job_id)

        threading.Timer(0.2, run).start()

    sent.workers.append(worker)
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["good", "bad"], "timeout_s": 10})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["job_id"] == sent[0][0] and body["model_id"] == model_id
    assert [p["index"] for p in body["predictions"]] == [0, 1]
    assert set(body["predictions"][0]) == {"index", "text", "label", "score", "scores"}


def test_multitask_predictions(client, sent):
    model_id = f.make_model(family="multitask", tasks={"label": ["neg", "pos"], "topic": ["film", "music"]})

    def worker(job_id, job_type):  # eager-style: done before the web starts polling
        f.start(job_id)
        f.add_multitask_predictions(job_id, ["x"])
        f.succeed(job_id)

    sent.workers.append(worker)
    body = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["x"]}).json
    assert set(body["predictions"][0]) == {"index", "text", "tasks"}


def test_still_running_after_timeout_is_202_with_the_job(client, sent):
    model_id = f.make_model()
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"], "timeout_s": 0.1})
    assert response.status_code == 202
    assert response.json["status"] == "queued" and response.json["id"] == sent[0][0]
    assert response.headers["Location"] == f"/api/v1/jobs/{sent[0][0]}"


def test_failed_job_is_an_error_with_its_message(client, sent):
    model_id = f.make_model()
    sent.workers.append(lambda job_id, _: f.fail(job_id, "classification failed: model files missing"))
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"]})
    error = assert_error(response, 500, "job_failed")
    assert error["message"] == "classification failed: model files missing"
    assert error["job_id"] == sent[0][0]


def test_cancelled_job_is_409(client, sent):
    model_id = f.make_model()
    sent.workers.append(lambda job_id, _: client.post(f"/api/v1/jobs/{job_id}/cancel"))
    assert_error(client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"]}), 409, "job_cancelled")


def test_default_timeout_comes_from_settings(settings, sent):
    import time

    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(predict_timeout_s=0.2)})
    model_id = f.make_model()
    started = time.monotonic()
    response = api_client(app).post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"]})
    assert response.status_code == 202
    assert 0.15 < time.monotonic() - started < 5


def test_eager_mode_runs_a_registered_task_in_process(app, client, monkeypatch):
    """With CELERY_EAGER and the task registered (worker imported in-process), the real send runs it inline."""
    from core.queue import CLASSIFY_TASK, enqueue_job

    monkeypatch.setattr("web.services.enqueue_job", enqueue_job)  # the real core.queue send
    celery = app.extensions["bertqueue"].celery
    seen = []

    @celery.task(name="tests.fake_classify", shared=False)  # this app only: never leaks into other apps
    def fake_classify(job_id):
        seen.append(job_id)
        f.start(job_id)
        f.add_single_task_predictions(job_id, ["only"])
        f.succeed(job_id)

    # The real worker task may already be registered (other tests import worker.tasks): stand in for it.
    monkeypatch.setitem(celery.tasks, CLASSIFY_TASK, fake_classify)

    model_id = f.make_model()
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["only"], "timeout_s": 0})
    assert response.status_code == 200, response.json
    assert seen == [response.json["job_id"]]
    assert response.json["predictions"][0]["text"] == "only"


def test_tokens_and_aggregation_strategy_are_for_token_models_only(client):
    """Issue 17: pre-tokenized input and an aggregation strategy sent to a text-classification model are a 422
    before any job row; an unknown strategy is a validation error."""
    from core.db import db
    from core.schema import Job
    from sqlalchemy import func, select
    from tests.factories import tiny_model_row

    model_id = tiny_model_row(Path("/nonexistent"), ["neg", "pos"])
    assert_error(client.post("/api/v1/predict", json={"model_id": model_id, "tokens": [["a", "b"]]}), 422,
                 "tokens_not_supported")
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": ["a"],
                                                             "aggregation_strategy": "max"}), 422,
                 "aggregation_not_supported")
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": ["a"],
                                                             "aggregation_strategy": "longest"}), 422,
                 "validation_error")
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model_id, "tokens": [["a", " "]]}), 422,
                 "validation_error")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
