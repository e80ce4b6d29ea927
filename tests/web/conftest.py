"""Web test fixtures. No test here talks to a real broker: enqueueing is recorded instead of sent."""
from __future__ import annotations

import pytest

from core.db import db
from core.schema import Job, JobStatus


class Sent(list):
    """``(job_id, job_type)`` of every enqueued job; ``worker`` callables run after each send (a fake worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.workers: list = []


@pytest.fixture(autouse=True)
def sent(monkeypatch) -> Sent:
    """Replaces the Celery send, and checks the job row was committed before its message went out."""
    calls = Sent()

    def fake_enqueue(celery_app, job_id: str, job_type: str) -> None:
        with db.session() as session:  # a separate session sees only committed rows
            job = session.get(Job, job_id)
            assert job is not None, "enqueued before the job row was committed"
            assert job.status == JobStatus.QUEUED.value
        calls.append((job_id, job_type))
        for worker in calls.workers:
            worker(job_id, job_type)

    monkeypatch.setattr("web.services.enqueue_job", fake_enqueue)
    return calls
