"""docker-compose.yml is validated statically (no Docker engine here): it parses and wires the stack."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_compose_names_the_services():
    services = _compose()["services"]
    assert {"redis", "postgres", "migrate", "web", "worker", "classify-worker"} <= set(services)


def test_app_services_share_env_wiring():
    services = _compose()["services"]
    for name in ("migrate", "web", "worker", "classify-worker"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["MODEL_STORE"] == "/data/models"
        assert services[name]["build"] == "."


def test_startup_order_and_commands():
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker", "classify-worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "worker.celery_app" in services["worker"]["command"]


def test_worker_layout_matches_the_launcher():
    """Compose runs the same two workers as `make run`: prefork for training, a thread pool (+ beat) for the rest."""
    from scripts.run_stack import celery_worker_commands

    services = _compose()["services"]
    launcher = celery_worker_commands()
    for service, name in (("worker", "train"), ("classify-worker", "classify")):
        command = services[service]["command"]
        for flag in ("-Q", "--pool", "-n"):
            assert command[command.index(flag) + 1] == launcher[name][launcher[name].index(flag) + 1], (service, flag)
    assert "-B" in services["classify-worker"]["command"] and "-B" not in services["worker"]["command"]
    assert "web:create_app()" in services["web"]["command"]
    assert "5000:5000" in services["web"]["ports"]


def test_volumes_for_model_store_and_postgres():
    compose = _compose()
    assert {"postgres-data", "model-store"} <= set(compose["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    for worker in ("worker", "classify-worker"):
        assert "model-store:/data/models" in compose["services"][worker]["volumes"]


def test_dockerfile_installs_pinned_requirements():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile
    assert "torch==2.13.0" in (REPO_ROOT / "requirements.txt").read_text()
