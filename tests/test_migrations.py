"""Alembic migrations build the schema on SQLite and PostgreSQL, with no drift from the SQLAlchemy metadata."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from core.schema import Base

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = {"users", "api_tokens", "login_sessions", "datasets", "jobs", "trained_models", "predictions", "model_files",
          "model_file_chunks", "user_counters", "alembic_version"}


def _alembic(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def _assert_migrates_without_drift(url: str) -> None:
    command.upgrade(_alembic(url), "head")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == TABLES
            diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
            assert diff == [], f"schema drift between migrations and core.schema: {diff}"
    finally:
        engine.dispose()
    command.downgrade(_alembic(url), "base")
    engine = create_engine(url)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_upgrade_on_empty_sqlite(tmp_path):
    _assert_migrates_without_drift(f"sqlite:///{tmp_path / 'migrated.db'}")


@pytest.mark.postgres
def test_upgrade_on_postgresql(postgres_schema_url):
    _assert_migrates_without_drift(postgres_schema_url)


def test_accounts_migration_shares_only_the_bundled_samples(tmp_path):
    """Rows from before accounts have no owner: the bundled samples become shared, every other row admin-only."""
    from alembic import command as alembic_command
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    alembic_command.upgrade(_alembic(url), "0003")
    engine = create_engine(url)
    with engine.begin() as connection:
        for name in ("sample_tweets.csv", "private.csv"):
            connection.execute(text(
                "INSERT INTO datasets (name, filename, columns, row_count, size_bytes, sha256, format, content, "
                "created_at) VALUES (:n, :n, '[]', 0, 0, '', 'csv', x'', CURRENT_TIMESTAMP)"), {"n": name})
    engine.dispose()
    alembic_command.upgrade(_alembic(url), "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT filename, shared FROM datasets")).all())
    engine.dispose()
    assert rows == {"sample_tweets.csv": 1, "private.csv": 0}
