"""Task types through the API: ``task_type`` validated and reported by jobs and models; predictions stored with the
task type's ``result`` read, filter and export exactly as rows stored before the column existed."""
from __future__ import annotations

from sqlalchemy import select, update

from core import task_types
from core.db import db
from core.results import insert_predictions
from core.schema import Prediction
from web import schemas

from . import factories as f
from .helpers import assert_error

TC = "text-classification"
RESULTS = [
    {"label": "sport", "score": 0.1 + 0.2, "scores": {"news": 0.6, "sport": 0.1 + 0.2}, "labels": ["sport", "news"]},
    {"label": "news", "score": 1 / 3, "scores": {"news": 1 / 3, "sport": 0.2}, "labels": ["news"]},
    {"label": "news", "score": 0.4, "scores": {"news": 0.4, "sport": 0.3}, "labels": []},
]


def test_an_unregistered_task_type_is_422_and_no_job(client, sent):
    body = {"dataset_id": f.make_dataset(), "text_column": "text", "label_column": "label",
            "task_type": "summarization"}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "validation_error")
    assert "task_type" in str(error["details"])
    assert sent == []


def test_jobs_and_models_report_their_task_type(client, sent):
    body = {"dataset_id": f.make_dataset(), "text_column": "text", "label_column": "label"}
    job = client.post("/api/v1/jobs/train", json=body).json
    schemas.Job.model_validate(job)
    assert job["task_type"] == TC and job["params"]["task_type"] == TC
    model_id = f.make_model()  # params without task_type: a model trained before it existed
    model = client.get(f"/api/v1/models/{model_id}").json
    schemas.Model.model_validate(model)
    assert model["task_type"] == TC
    classify = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": ["a"]}).json
    assert classify["task_type"] == TC and "task_type" not in classify["params"]  # the model's, not stored
    assert client.get(f"/api/v1/jobs/{classify['id']}").json["task_type"] == TC
    assert {job["task_type"] for job in client.get("/api/v1/jobs").json["items"]} == {TC}


def _job_with_results(model_id: int, *, legacy: bool) -> str:
    """A multi-label job whose rows are stored as the worker stores them (``legacy``: then ``result`` emptied, as
    rows stored before migration 0012)."""
    kind = task_types.get(TC)
    items = [{"index": i, "text": f"t{i}", **kind.prediction_columns(result)} for i, result in enumerate(RESULTS)]
    job_id = f.finished(f.make_classify_job(model_id, [f"t{i}" for i in range(len(RESULTS))]), items)
    if legacy:
        with db.session() as session:
            session.execute(update(Prediction).where(Prediction.job_id == job_id).values(result=None))
    return job_id


def test_old_and_new_rows_read_filter_and_export_the_same(client):
    model_id = f.make_model(tasks={"labels": ["news", "sport"]}, params={"multi_label": True})
    new, old = _job_with_results(model_id, legacy=False), _job_with_results(model_id, legacy=True)
    with db.session() as session:
        stored = session.scalar(select(Prediction.result).where(Prediction.job_id == new, Prediction.index == 0))
    assert stored == RESULTS[0]

    def body(job_id: str, path: str) -> bytes:
        response = client.get(f"/api/v1/jobs/{job_id}/{path}")
        assert response.status_code == 200, response.data
        return response.data.replace(job_id.encode(), b"JOB")

    for path in ("predictions", "predictions?label=news", "predictions?label=sport", "export?format=csv",
                 "export?format=jsonl"):
        assert body(new, path) == body(old, path), path  # byte for byte
    page = client.get(f"/api/v1/jobs/{new}/predictions?label=news").json
    schemas.PredictionPage.model_validate(page)
    assert [item["index"] for item in page["items"]] == [0, 1]
    assert page["items"][0] == {"index": 0, "text": "t0", "labels": ["sport", "news"], "scores": RESULTS[0]["scores"]}
