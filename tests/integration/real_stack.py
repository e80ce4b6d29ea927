"""The steps every per-task real-stack test shares (tests/integration/test_real_token_worker.py,
test_real_qa_worker.py, test_real_mc_worker.py): a stack of its own on its own Redis database with a worker started,
the API steps of api_steps.py through a client pointed at it, and the stored predictions read back from PostgreSQL.

Each test file keeps only what differs: its data, its requests and its assertions.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import db
from core.schema import Prediction

from .api_steps import ApiSteps
from .test_real_worker import _client, _logs, _Stack


class RealRun(ApiSteps):
    """A started worker on a stack of its own and API steps through a client pointed at the stack's database."""

    def __init__(self, stack: _Stack, tmp_path: Path) -> None:
        stack.start_worker()
        # the client points this process at the stack's database; a failed job shows the worker's logs
        super().__init__(_client(stack.settings), logs=lambda: _logs(tmp_path))


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
