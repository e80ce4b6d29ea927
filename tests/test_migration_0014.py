"""Migration 0014 on a database holding rows: jobs gain ``predictions_stored``, filled with each job's stored
prediction rows; and back."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from tests.test_migration_0005 import JOB, _execute, _scalar_rows
from tests.test_migrations import _alembic

PREDICTION = ("INSERT INTO predictions (job_id, \"index\", text, label, score, scores) "
              "VALUES (:job, :index, 'hi', 'pos', 0.9, '{}')")


def _check_round_trip(url: str) -> None:
    command.upgrade(_alembic(url), "0013")
    for job_id in ("with-rows", "without-rows"):
        _execute(url, JOB.replace("'queued'", "'succeeded'"), id=job_id, type="classify")
    for index in range(3):
        _execute(url, PREDICTION, job="with-rows", index=index)

    command.upgrade(_alembic(url), "0014")
    assert sorted(_scalar_rows(url, "SELECT id, predictions_stored FROM jobs")) == [("with-rows", 3),
                                                                                  ("without-rows", 0)]
    _execute(url, JOB, id="new", type="classify")  # the server default: a new job has stored nothing
    assert _scalar_rows(url, "SELECT predictions_stored FROM jobs WHERE id = 'new'") == [(0,)]

    command.downgrade(_alembic(url), "0013")
    engine = create_engine(url)
    with engine.connect() as connection:
        assert "predictions_stored" not in {c["name"] for c in inspect(connection).get_columns("jobs")}
    engine.dispose()
    assert _scalar_rows(url, "SELECT count(*) FROM predictions") == [(3,)]


def test_0014_round_trip_on_sqlite(tmp_path):
    _check_round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_0014_round_trip_on_postgresql(postgres_schema_url):
    _check_round_trip(postgres_schema_url)
