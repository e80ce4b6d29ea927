"""Shared fixtures: an isolated SQLite database, model store and eager Celery per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core import runtime  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import db  # noqa: E402
from core.schema import Base  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for one test: fresh SQLite file, model store under tmp_path, tasks run eagerly, CPU."""
    s = Settings(
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        redis_url="redis://127.0.0.1:6379/15",
        model_store=str(tmp_path / "models"),
        device="cpu",
        secret_key="test-secret",
        celery_eager=True,
        predict_timeout_s=30.0,
    )
    runtime.configure(s)
    Base.metadata.create_all(db.engine)
    yield s
    db.dispose()


@pytest.fixture
def app(settings: Settings):
    """The Flask app on the test settings, with CSRF off (page tests that check CSRF turn it back on)."""
    from web import create_app

    return create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False})


@pytest.fixture
def client(app):
    return app.test_client()
