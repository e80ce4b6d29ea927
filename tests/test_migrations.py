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
TABLES = {"users", "api_tokens", "datasets", "jobs", "trained_models", "predictions", "alembic_version"}


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
