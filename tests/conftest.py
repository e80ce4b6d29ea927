"""Shared fixtures: an isolated SQLite database, model store and eager Celery per test."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.fixture(scope="session", autouse=True)
def encoder_roots(tmp_path_factory) -> Iterator[str]:
    """Pytest's base temporary folder as ENCODER_ROOTS: the tiny encoders tests build (and every tmp_path) lie
    under it. Set in the environment too, for stacks started as processes and Settings.from_env."""
    roots = str(tmp_path_factory.getbasetemp())
    previous = os.environ.get("ENCODER_ROOTS")
    os.environ["ENCODER_ROOTS"] = roots
    yield roots
    if previous is None:
        os.environ.pop("ENCODER_ROOTS", None)
    else:
        os.environ["ENCODER_ROOTS"] = previous


@pytest.fixture
def settings(tmp_path: Path, encoder_roots: str) -> Settings:
    """Settings for one test: fresh SQLite file, model store under tmp_path, tasks run eagerly, CPU."""
    s = Settings(
        encoder_roots=encoder_roots,
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
def admin_token(settings: Settings) -> str:
    """An API token of an admin user created in the test database."""
    from tests.factories import make_user

    return make_user("admin", is_admin=True).token


@pytest.fixture
def client(app, admin_token: str):
    """A test client authenticated as an admin: it sends ``Authorization: Bearer`` (API and pages alike)."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return client


@pytest.fixture
def anonymous(app):
    """A test client with no credentials."""
    return app.test_client()


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_service(name: str, error: Exception | None) -> None:
    """Skip when a server is unreachable (a laptop); under CI the server must be up, so fail instead."""
    if error is None:
        return
    message = f"{name} not reachable: {error}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: .ci/run must start it)")
    pytest.skip(message)


def _postgres_error() -> Exception | None:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def _redis_error() -> Exception | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema, dropped on exit (any fixture scope)."""
    import uuid

    from sqlalchemy import create_engine, text

    require_service("PostgreSQL", _postgres_error())
    schema = f"bq_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_schema_url():
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def redis_url():
    """The real Redis server's URL (skipped on a laptop without one; required under CI)."""
    require_service("Redis", _redis_error())
    return REDIS_URL


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random-weight BERT encoder (+ the real MiniLM tokenizer), built once per session."""
    from tests.factories import tiny_bert_encoder

    return tiny_bert_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory):
    """A tiny random-weight DistilBERT encoder, built once per session."""
    from tests.factories import tiny_distilbert_encoder

    return tiny_distilbert_encoder(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tokenizer(tiny_bert_dir):
    from models.encoders import load_tokenizer

    return load_tokenizer(tiny_bert_dir)


@pytest.fixture
def encoder_dir(request, tiny_bert_dir, tiny_distilbert_dir):
    """Encoder directory for a family name given as the fixture's param (distilbert needs a DistilBERT one)."""
    return tiny_distilbert_dir if request.param == "distilbert" else tiny_bert_dir
