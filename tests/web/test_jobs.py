"""Job JSON, listing with filters and pagination, classify job creation and cancel transitions."""
from __future__ import annotations

from datetime import datetime

import pytest

from core.db import db
from core.specs import ClassifyRequest
from core.schema import Job
from web import schemas

from . import factories as f
from .helpers import assert_error

JOB_FIELDS = {"id", "type", "status", "progress", "error", "params", "metrics", "model_id", "created_at", "started_at",
              "finished_at"}


def test_job_json_has_the_documented_fields(client):
    dataset_id = f.make_dataset()
    model_id = f.make_model()
    job_id = f.make_train_job(dataset_id)
    f.start(job_id)
    f.progress(job_id, 0.25)
    job = client.get(f"/api/v1/jobs/{job_id}").json
    schemas.Job.model_validate(job)
    assert JOB_FIELDS <= set(job)
    assert job["status"] == "running" and job["progress"] == 0.25 and job["attempts"] == 1
    assert job["finished_at"] is None and job["terminal"] is False
    for key in ("created_at", "started_at"):
        assert datetime.fromisoformat(job[key]).utcoffset().total_seconds() == 0
    f.succeed(job_id, metrics={"accuracy": 0.75, "macro_f1": 0.7}, model_id=model_id)
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["terminal"] is True
    assert job["metrics"] == {"accuracy": 0.75, "macro_f1": 0.7} and job["model_id"] == model_id
    assert job["finished_at"].endswith("+00:00")


def test_failed_job_shows_its_error(client):
    job_id = f.make_train_job(f.make_dataset())
    f.fail(job_id, "label column 'x' vanished")
    job = client.get(f"/api/v1/jobs/{job_id}").json
    assert job["status"] == "failed" and job["error"] == "label column 'x' vanished"


def test_classify_job_creation_and_params_hide_texts(client, sent):
    model_id = f.make_model()
    texts = [f"text number {i}" for i in range(10)]
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": texts})
    assert response.status_code == 202
    job = response.json
    assert job["type"] == "classify" and job["model_id"] == model_id and job["dataset_id"] is None
    assert "texts" not in job["params"]
    assert job["params"]["text_count"] == 10 and job["params"]["texts_preview"] == texts[:3]
    assert sent == [(job["id"], "classify")]
    with db.session() as session:  # the texts live in the deferred inputs column, read back by the worker
        row = session.get(Job, job["id"])
        assert row.params == {"model_id": model_id, "text_count": 10, "texts_preview": texts[:3]}
        assert row.inputs == texts
        assert ClassifyRequest.from_job_params(row.params, row.inputs).texts == texts
    assert "texts" not in client.get(f"/api/v1/jobs/{job['id']}").json["params"]


def test_predict_params_do_not_carry_timeout(client, sent):
    model_id = f.make_model()
    job = client.post("/api/v1/predict", json={"model_id": model_id, "texts": ["a"], "timeout_s": 0}).json
    with db.session() as session:
        row = session.get(Job, job["id"])
        assert "timeout_s" not in row.params and row.inputs == ["a"]


@pytest.fixture
def many_jobs():
    dataset_id = f.make_dataset()
    model_id = f.make_model()
    ids = {"train": [], "classify": []}
    for i in range(5):
        ids["train"].append(f.make_train_job(dataset_id))
        ids["classify"].append(f.make_classify_job(model_id, [f"t{i}"]))
    f.start(ids["train"][0])
    f.start(ids["classify"][1])
    f.succeed(ids["classify"][1])
    return ids, model_id, dataset_id


def test_listing_is_newest_first_with_total(client, many_jobs):
    ids, *_ = many_jobs
    listing = client.get("/api/v1/jobs").json
    schemas.JobList.model_validate(listing)
    assert listing["total"] == 10 and len(listing["items"]) == 10
    created = [item["created_at"] for item in listing["items"]]
    assert created == sorted(created, reverse=True)
    assert listing["items"][0]["id"] == ids["classify"][-1]


def test_listing_filters(client, many_jobs):
    ids, model_id, dataset_id = many_jobs
    train = client.get("/api/v1/jobs?type=train").json
    assert train["total"] == 5 and {j["id"] for j in train["items"]} == set(ids["train"])
    running = client.get("/api/v1/jobs?status=running").json
    assert [j["id"] for j in running["items"]] == [ids["train"][0]]
    done = client.get("/api/v1/jobs?status=succeeded&type=classify").json
    assert [j["id"] for j in done["items"]] == [ids["classify"][1]]
    assert client.get("/api/v1/jobs?status=succeeded&type=train").json == {"items": [], "total": 0, "limit": 50,
                                                                          "offset": 0}
    assert client.get(f"/api/v1/jobs?model_id={model_id}").json["total"] == 5
    assert client.get(f"/api/v1/jobs?dataset_id={dataset_id}").json["total"] == 5


def test_listing_pagination(client, many_jobs):
    everything = [j["id"] for j in client.get("/api/v1/jobs").json["items"]]
    page1 = client.get("/api/v1/jobs?limit=4").json
    page2 = client.get("/api/v1/jobs?limit=4&offset=4").json
    page3 = client.get("/api/v1/jobs?limit=4&offset=8").json
    assert page1["total"] == page2["total"] == page3["total"] == 10
    assert [j["id"] for j in page1["items"] + page2["items"] + page3["items"]] == everything
    assert len(page3["items"]) == 2
    assert client.get("/api/v1/jobs?offset=50").json["items"] == []


def test_cancel_queued_and_running(client):
    dataset_id = f.make_dataset()
    queued = f.make_train_job(dataset_id)
    response = client.post(f"/api/v1/jobs/{queued}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "cancelled" and response.json["finished_at"] is not None
    running = f.make_train_job(dataset_id)
    f.start(running)
    assert client.post(f"/api/v1/jobs/{running}/cancel").json["status"] == "cancelled"


@pytest.mark.parametrize("end", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_job_is_409(client, end):
    job_id = f.make_train_job(f.make_dataset())
    if end == "succeeded":
        f.start(job_id)
        f.succeed(job_id)
    elif end == "failed":
        f.fail(job_id, "no")
    else:
        client.post(f"/api/v1/jobs/{job_id}/cancel")
    error = assert_error(client.post(f"/api/v1/jobs/{job_id}/cancel"), 409, "invalid_transition")
    assert end in error["message"]
    assert client.get(f"/api/v1/jobs/{job_id}").json["status"] == end
