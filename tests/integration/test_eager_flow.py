"""End to end in Celery eager mode: REST upload -> train -> classify -> predictions, for every model family."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import jobs
from core.db import db
from core.schema import Job, JobType, Prediction, TrainedModel, utcnow

from tests.accuracy import assert_task_metrics, validation_rows

from .conftest import sample_csv, upload, wait_for_job

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from tests.factories import api_client

TEXTS = ["@united thanks, the crew was amazing!", "worst flight ever, lost my bag", "flight 123 lands at 5pm"]


def _train(client, dataset_id: int, encoder: Path, **overrides) -> dict:
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": "bert",
            "encoder": str(encoder), "epochs": 1, "batch_size": 8, "max_length": 32, "validation_split": 0.25,
            "seed": 1}
    body.update(overrides)
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    return wait_for_job(client, response.get_json()["id"])


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("bert", {}),
        ("distilbert", {}),
        ("bert_lstm", {"lstm_hidden": 16, "bidirectional": True}),
        ("multitask", {"label_columns": ["sentiment", "topic"], "task_weights": {"topic": 0.5},
                       "encoder_lr": 1e-4, "head_lr": 1e-3}),
    ],
)
def test_train_and_classify_every_family(client, tiny_encoders, family, options):
    columns = ("text", "sentiment", "topic") if family == "multitask" else ("text", "sentiment")
    data = sample_csv(60, columns)
    dataset_id = upload(client, data)
    overrides = {"family": family, **options}
    if family == "multitask":
        overrides["label_column"] = None
    encoder = tiny_encoders["distilbert" if family == "distilbert" else "bert"]
    job = _train(client, dataset_id, encoder, **overrides)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["started_at"] and job["finished_at"]
    metrics = job["metrics"]
    assert len(metrics["epochs"]) == 1 and metrics["epochs"][0]["accuracy"] == metrics["accuracy"]
    assert (metrics["train_examples"], metrics["validation_examples"]) == (45, 15)

    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["family"] == family and model["training_job_id"] == job["id"]
    if family == "multitask":
        assert set(model["tasks"]) == {"sentiment", "topic"}
        assert set(metrics["tasks"]) == {"sentiment", "topic"}
    else:
        assert model["labels"] == ["negative", "neutral", "positive"]

    # the validation rows go through the job API too: the reported metrics must be those of these predictions
    tasks = ["sentiment", "topic"] if family == "multitask" else ["sentiment"]
    val_texts, truth = validation_rows(list(csv.DictReader(io.StringIO(data.decode()))), text_column="text",
                                       label_columns=tasks, validation_split=0.25, seed=1, family=family)
    response = client.post("/api/v1/jobs/classify", json={"model_id": job["model_id"], "texts": TEXTS + val_texts})
    assert response.status_code == 202
    classify = wait_for_job(client, response.get_json()["id"])
    assert classify["status"] == "succeeded", classify["error"]
    page = client.get(f"/api/v1/jobs/{classify['id']}/predictions?offset=0&limit=100").get_json()
    assert page["total"] == len(TEXTS) + 15
    assert [item["index"] for item in page["items"]] == list(range(len(TEXTS) + 15))
    assert [item["text"] for item in page["items"]] == TEXTS + val_texts
    for task in tasks:
        reported = metrics["tasks"][task] if family == "multitask" else metrics
        assert_task_metrics(reported, truth[task], [item["tasks"][task] if family == "multitask" else item
                                                    for item in page["items"][len(TEXTS):]])
    for item in page["items"]:
        results = item["tasks"].values() if family == "multitask" else [item]
        for result in results:
            assert result["label"] in result["scores"]
            assert result["score"] == pytest.approx(max(result["scores"].values()))
            assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    if family == "multitask":
        assert set(page["items"][0]["tasks"]["topic"]["scores"]) == set(model["tasks"]["topic"])


def test_predict_waits_for_the_answer(client, tiny_encoders):
    dataset_id = upload(client, sample_csv(40))
    model_id = _train(client, dataset_id, tiny_encoders["bert"])["model_id"]
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": TEXTS[:2]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [p["text"] for p in body["predictions"]] == TEXTS[:2]
    assert all(p["label"] in ("negative", "neutral", "positive") for p in body["predictions"])


def test_duplicate_and_resumed_classification_never_duplicates_rows(client, tiny_encoders):
    dataset_id = upload(client, sample_csv(40))
    model_id = _train(client, dataset_id, tiny_encoders["bert"])["model_id"]
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.CLASSIFY, {"model_id": model_id, "texts": TEXTS}, model_id=model_id).id
        # a previous attempt stored index 0 and then its worker died (stale lease)
        jobs.claim(session, job_id, "dead-worker", lease_seconds=1, max_attempts=3,
                   now=utcnow().replace(year=2000))
        session.add(Prediction(job_id=job_id, index=0, text=TEXTS[0], label="from-attempt-1", score=1.0, scores={}))
    worker.tasks.classify.apply(args=[job_id])  # redelivery: reclaims the stale lease, resumes
    worker.tasks.classify.apply(args=[job_id])  # a duplicate message: the job is done, nothing happens
    with db.session() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempts) == ("succeeded", 2)
        rows = session.scalars(select(Prediction).where(Prediction.job_id == job_id).order_by(Prediction.index)).all()
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[0].label == "from-attempt-1"  # resumed after it, not rewritten


def test_cancelled_job_is_not_run(client):
    dataset_id = upload(client, sample_csv(40))
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.TRAIN, {"dataset_id": dataset_id, "text_column": "text",
                                                          "label_column": "sentiment"}, dataset_id=dataset_id).id
        jobs.cancel(session, job_id)
    worker.tasks.train.apply(args=[job_id])
    with db.session() as session:
        assert session.get(Job, job_id).status == "cancelled"
        assert session.scalar(select(func.count()).select_from(TrainedModel)) == 0


def test_training_failure_is_reported_and_leaves_nothing_behind(client, settings, tmp_path):
    dataset_id = upload(client, sample_csv(40))
    missing = tmp_path / "no-such-encoder"
    job = _train(client, dataset_id, missing)
    assert job["status"] == "failed"
    assert job["error"] and "encoder" in job["error"].lower()
    assert job["model_id"] is None
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(TrainedModel)) == 0
    store = Path(settings.model_store)
    assert not any((store / "models").glob("*")) if (store / "models").exists() else True
    assert not any((store / "tmp").glob("*")) if (store / "tmp").exists() else True


def test_worker_refuses_a_missing_or_incomplete_encoder_folder_with_one_message(client, tmp_path):
    """The job's error must not tell a folder without config.json from one that does not exist."""
    dataset_id = upload(client, sample_csv(40))
    (tmp_path / "empty").mkdir()
    errors = []
    for name in ("no-such-encoder", "empty"):
        job = _train(client, dataset_id, tmp_path / name)
        assert job["status"] == "failed"
        errors.append(job["error"].replace(str(tmp_path / name), "<path>"))
    assert errors == ["encoder '<path>' is not available on this deployment"] * 2


def test_a_commit_whose_answer_was_lost_keeps_the_model_s_files(client, settings, tiny_encoders, monkeypatch):
    """An error after the model row's commit reached the database (its reply lost) must not delete the files of a
    recorded model; an error before anything was recorded still removes them (issue 16, item 9)."""
    from worker.jobs import train

    real = train._record_model

    def lost_reply(*args, **kwargs):
        real(*args, **kwargs)
        raise ConnectionError("server closed the connection after the commit")

    monkeypatch.setattr(train, "_record_model", lost_reply)
    dataset_id = upload(client, sample_csv(40))
    job = _train(client, dataset_id, tiny_encoders["bert"])
    assert job["status"] == "succeeded" and job["model_id"] is not None
    with db.session() as session:
        directory = Path(session.get(TrainedModel, job["model_id"]).artifact_dir)
    assert (directory / "bertqueue_config.json").is_file() and (directory / "model.safetensors").is_file()
    response = client.post("/api/v1/predict", json={"model_id": job["model_id"], "texts": TEXTS[:1]})
    assert response.status_code == 200, response.get_json()

    def refused(*args, **kwargs):
        raise ConnectionError("the database went away before the commit")

    monkeypatch.setattr(train, "_record_model", refused)
    failed = _train(client, dataset_id, tiny_encoders["bert"])
    assert failed["status"] == "failed" and failed["model_id"] is None
    assert [p.name for p in (Path(settings.model_store) / "models").iterdir()] == [directory.name]


def test_classify_with_unknown_model_is_404(client):
    response = client.post("/api/v1/jobs/classify", json={"model_id": 999, "texts": ["hi"]})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0  # nothing half-written


def test_reconciler_resends_a_job_whose_message_was_lost(client, tiny_encoders):
    """SQL says queued, Redis never got (or lost) the message: the periodic reconciler sends it again."""
    dataset_id = upload(client, sample_csv(40))
    params = {"dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "encoder":
              str(tiny_encoders["bert"]), "epochs": 1, "max_length": 32}
    with db.session() as session:
        from core.specs import TrainRequest

        job = jobs.create_job(session, JobType.TRAIN, TrainRequest.model_validate(params).model_dump(),
                              dataset_id=dataset_id)
        job.enqueued_at = utcnow().replace(year=2000)  # sent long ago; no worker ever saw it
        job_id = job.id
    assert worker.tasks.reconcile.apply().get() == 1
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job.status == "succeeded" and job.model_id is not None
    assert worker.tasks.reconcile.apply().get() == 0  # nothing else is waiting


def test_encoder_outside_the_allowed_roots_is_refused_before_queueing(settings, tmp_path):
    from web import create_app

    restricted = settings.replace(encoder_roots=str(tmp_path / "encoders"))
    client = api_client(create_app({"TESTING": True, "SETTINGS": restricted, "WTF_CSRF_ENABLED": False}))
    dataset_id = upload(client, sample_csv(40))
    response = client.post("/api/v1/jobs/train", json={"dataset_id": dataset_id, "text_column": "text",
                                                       "label_column": "sentiment", "encoder": "/etc"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "encoder_not_allowed"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_model_versions_count_per_owner_and_name(app, settings, tiny_encoders):
    """Two users training a model of the same name each get version 1, then 2: nobody learns of the other's."""
    from tests.factories import make_user

    alice, bob = (api_client(app, make_user(name)) for name in ("alice", "bob"))
    versions = {}
    for who, client in (("alice", alice), ("bob", bob), ("alice", alice)):
        dataset_id = upload(client, sample_csv(40, ("text", "sentiment")))
        job = _train(client, dataset_id, tiny_encoders["bert"], name="sentiment")
        assert job["status"] == "succeeded", job["error"]
        model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
        versions.setdefault(who, []).append(model["version"])
    assert versions == {"alice": [1, 2], "bob": [1]}
    # the worker records each published model's size, so a user's storage quota is one SQL SUM (issue 16)
    with db.session() as session:
        for row in session.scalars(select(TrainedModel)):
            files = sum(p.stat().st_size for p in Path(row.artifact_dir).rglob("*") if p.is_file())
            assert row.size_bytes == files > 0
