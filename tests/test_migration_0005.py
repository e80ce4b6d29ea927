"""Migration 0005 on a database holding rows: jobs.type accepts "evaluate", jobs gain ``eta_at``, predictions gain
``labels`` and ``text_pair``; and back."""
from __future__ import annotations

import json

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.test_migrations import _alembic

JOB = ("INSERT INTO jobs (id, type, status, progress, attempts, params, sends, created_at) "
       "VALUES (:id, :type, 'queued', 0, 0, '{}', 0, CURRENT_TIMESTAMP)")


def _execute(url: str, sql: str, **params) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()


def _scalar_rows(url: str, sql: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(sql))]
    finally:
        engine.dispose()


def _check_round_trip(url: str) -> None:
    command.upgrade(_alembic(url), "0004")
    _execute(url, JOB, id="train-1", type="train")
    _execute(url, "INSERT INTO predictions (job_id, \"index\", text, label, score, scores) "
                  "VALUES ('train-1', 0, 'hi', 'pos', 0.9, '{}')")
    with pytest.raises(IntegrityError):
        _execute(url, JOB, id="eval-0", type="evaluate")  # the old constraint

    command.upgrade(_alembic(url), "0005")
    _execute(url, JOB, id="eval-1", type="evaluate")
    _execute(url, "UPDATE predictions SET labels = :labels, text_pair = 'there'", labels=json.dumps(["pos", "sports"]))
    _execute(url, "UPDATE jobs SET eta_at = CURRENT_TIMESTAMP")
    with pytest.raises(IntegrityError):
        _execute(url, JOB, id="bogus-1", type="bogus")  # still a CHECK, not a free-for-all
    assert sorted(_scalar_rows(url, "SELECT id, type FROM jobs")) == [("eval-1", "evaluate"), ("train-1", "train")]
    (labels,), = _scalar_rows(url, "SELECT labels FROM predictions")
    assert (json.loads(labels) if isinstance(labels, str) else labels) == ["pos", "sports"]

    command.downgrade(_alembic(url), "0004")
    assert _scalar_rows(url, "SELECT id, type FROM jobs") == [("train-1", "train")]  # evaluate jobs go with the type
    engine = create_engine(url)
    with engine.connect() as connection:
        assert not {"labels", "text_pair"} & {c["name"] for c in inspect(connection).get_columns("predictions")}
        assert "eta_at" not in {c["name"] for c in inspect(connection).get_columns("jobs")}
    engine.dispose()
    assert _scalar_rows(url, "SELECT label FROM predictions") == [("pos",)]


def test_0005_round_trip_on_sqlite(tmp_path):
    _check_round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_0005_round_trip_on_postgresql(postgres_schema_url):
    _check_round_trip(postgres_schema_url)
