"""The steps every per-task real-stack test shares (tests/integration/test_real_token_worker.py, test_real_qa_worker.py,
test_real_mc_worker.py): a stack of its own on its own Redis database with a worker started, and a client that uploads
a dataset, runs a job through the API until it succeeds and reads the stored predictions back from PostgreSQL.

Each test file keeps only what differs: its data, its requests and its assertions.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import db
from core.schema import Prediction

from .conftest import wait_for_job
from .test_real_worker import _client, _logs, _Stack


class RealRun:
    """A started worker on a stack of its own and an API client pointed at the stack's database."""

    def __init__(self, stack: _Stack, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        stack.start_worker()
        self.client = _client(stack.settings)  # points this process at the stack's database

    def upload(self, data: bytes, name: str, fmt: str, rows: int) -> int:
        """Upload ``data`` as file ``name``; check it is read as ``fmt`` with ``rows`` rows; return the dataset id."""
        upload = self.client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), name)},
                                  content_type="multipart/form-data")
        assert upload.status_code == 201, upload.get_json()
        body = upload.get_json()
        assert (body["format"], body["rows"]) == (fmt, rows)
        return body["id"]

    def run_job(self, kind: str, request: dict, timeout: float = 120, task_type: str | None = None) -> dict:
        """POST ``request`` to ``/api/v1/jobs/<kind>``, wait for the job to succeed (the worker's logs on failure),
        check its ``task_type`` when given, and return the finished job."""
        response = self.client.post(f"/api/v1/jobs/{kind}", json=request)
        assert response.status_code == 202, response.get_json()
        job = wait_for_job(self.client, response.get_json()["id"], timeout=timeout)
        assert job["status"] == "succeeded", f"{job['error']}\n{_logs(self.tmp_path)}"
        if task_type is not None:
            assert job["task_type"] == task_type
        return job

    def model(self, model_id: int) -> dict:
        """The model as the API serves it."""
        return self.client.get(f"/api/v1/models/{model_id}").get_json()

    def predictions(self, job_id: str, query: str = "") -> list[dict]:
        """The prediction items the API serves for a job (``query``: e.g. ``?label=person``)."""
        return self.client.get(f"/api/v1/jobs/{job_id}/predictions{query}").get_json()["items"]


def stored_predictions(job_id: str, *columns: str) -> list[tuple]:
    """What the worker stored for a job, read from PostgreSQL in index order: one tuple of ``columns`` a row (read
    inside the session, as the rows expire when it closes)."""
    with db.session() as session:
        rows = session.scalars(select(Prediction).where(Prediction.job_id == job_id).order_by(Prediction.index)).all()
        return [tuple(getattr(p, column) for column in columns) for p in rows]


def real_run_fixture(redis_db: int):
    """A ``run`` fixture for one test file: a stack of its own on Redis database ``redis_db`` (flushed by _Stack),
    stopped afterwards, yielding a :class:`RealRun`."""

    @pytest.fixture
    def run(tmp_path, postgres_schema_url, redis_url):
        stack = _Stack(postgres_schema_url, redis_url, tmp_path, redis_db=redis_db)
        try:
            yield RealRun(stack, tmp_path)
        finally:
            stack.stop()
            db.dispose()

    return run
