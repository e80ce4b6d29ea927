"""A training job cancelled and then deleted while its worker is still saving the model: the worker records
nothing (its lease check finds the job gone) instead of failing on the foreign key and retrying."""
from __future__ import annotations

from types import SimpleNamespace

from core import jobs
from core.db import db
from core.schema import Job, TrainedModel
from core.specs import TrainRequest
from tests.web import factories as f
from worker.jobs import train


def test_a_deleted_training_job_records_no_model(settings, tmp_path, monkeypatch):
    dataset = f.make_dataset()
    job_id = f.make_train_job(dataset)
    monkeypatch.setattr(train, "worker_id", lambda: "w1")
    f.start(job_id, worker="w1")
    with db.session() as session:  # the user cancels it, then deletes it (DELETE /api/v1/jobs/<id>)
        jobs.cancel(session, job_id)
    with db.session() as session:
        jobs.delete_finished(session, job_id)
    final_dir = tmp_path / "model"
    final_dir.mkdir()
    (final_dir / "model.safetensors").write_bytes(b"x")
    request = TrainRequest.model_validate({"dataset_id": dataset, "text_column": "text", "label_column": "label"})
    result = SimpleNamespace(tasks={"label": ["neg", "pos"]}, metrics={})
    assert train._record_model(job_id, request, None, "reviews", result, str(final_dir), 1) is False
    with db.session() as session:
        assert session.query(TrainedModel).count() == 0 and session.get(Job, job_id) is None
