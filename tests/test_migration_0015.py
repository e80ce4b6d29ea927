"""Migration 0015 on a database holding rows: a user_counters row per job owner, holding the sum of their jobs'
``predictions_stored``; and back."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from tests.test_migration_0005 import JOB, _execute, _scalar_rows
from tests.test_migrations import _alembic

USER = "INSERT INTO users (id, username, is_admin, created_at) VALUES (:id, :name, false, CURRENT_TIMESTAMP)"
OWNED_JOB = JOB.replace("(id, type,", "(id, owner_id, predictions_stored, type,").replace(
    "VALUES (:id, :type,", "VALUES (:id, :owner, :stored, :type,")


def _check_round_trip(url: str) -> None:
    command.upgrade(_alembic(url), "0014")
    for user_id, name in ((1, "with-jobs"), (2, "without-jobs"), (3, "with-empty-jobs")):
        _execute(url, USER, id=user_id, name=name)
    for job_id, owner, stored in (("a", 1, 3), ("b", 1, 4), ("c", 3, 0), ("d", None, 5)):
        _execute(url, OWNED_JOB, id=job_id, owner=owner, stored=stored, type="classify")

    command.upgrade(_alembic(url), "0015")
    assert sorted(_scalar_rows(url, "SELECT user_id, predictions_stored FROM user_counters")) == [(1, 7), (3, 0)]
    _execute(url, "INSERT INTO user_counters (user_id) VALUES (2)")  # the server default: nothing stored
    assert _scalar_rows(url, "SELECT predictions_stored FROM user_counters WHERE user_id = 2") == [(0,)]

    command.downgrade(_alembic(url), "0014")
    engine = create_engine(url)
    with engine.connect() as connection:
        assert "user_counters" not in inspect(connection).get_table_names()
    engine.dispose()
    assert _scalar_rows(url, "SELECT count(*) FROM users") == [(3,)]


def test_0015_round_trip_on_sqlite(tmp_path):
    _check_round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_0015_round_trip_on_postgresql(postgres_schema_url):
    _check_round_trip(postgres_schema_url)
