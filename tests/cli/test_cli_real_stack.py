"""The installed ``bertqueue`` command, as a subprocess outside the checkout, against a real stack: the web app
served over HTTP, a real Celery worker process, Redis and PostgreSQL. Train a tiny model, classify a file to CSV,
and the exit statuses of a failed job and of a refused token."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import make_user
from tests.integration.conftest import sample_csv
from tests.integration.test_real_worker import _logs, _Stack

from .conftest import serving, train_args

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REDIS_DB = 14  # a database of its own on the shared server (other real tests use 10 to 13), flushed by _Stack
BERTQUEUE = Path(sys.executable).with_name("bertqueue")


def test_installed_command_trains_and_classifies_a_file_on_the_real_stack(
        tmp_path, postgres_schema_url, redis_url, tiny_bert_dir):
    if not BERTQUEUE.exists():
        pytest.skip(f"{BERTQUEUE} is not installed: run `make install`")
    stack = _Stack(postgres_schema_url, redis_url, tmp_path, redis_db=REDIS_DB)
    try:
        stack.start_worker()
        from web import create_app

        app = create_app({"TESTING": True, "SETTINGS": stack.settings, "WTF_CSRF_ENABLED": False})
        user = make_user("cli-user")
        with serving(app) as url:
            env = {**os.environ, "BERTQUEUE_URL": url, "BERTQUEUE_TOKEN": user.token}
            env.pop("PYTHONPATH", None)  # the installed command finds its package by itself

            def bertqueue(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run([str(BERTQUEUE), *args], cwd=tmp_path, env=env, capture_output=True,
                                      text=True, timeout=300)

            data = tmp_path / "tweets.csv"
            data.write_bytes(sample_csv(40))
            trained = bertqueue("--json", *train_args(data, tiny_bert_dir, "--name", "real-cli", "--wait"))
            assert trained.returncode == 0, f"{trained.stderr}\n{_logs(tmp_path)}"
            job = json.loads(trained.stdout)
            assert job["status"] == "succeeded" and job["model_id"]

            texts = tmp_path / "texts.csv"
            texts.write_text("text\nthe crew was amazing\nlost my bag again\nflight lands at 5pm\n", encoding="utf-8")
            out = tmp_path / "predictions.csv"
            classified = bertqueue("classify", "--model", "real-cli", str(texts), "--text-column", "text",
                                   "-o", str(out))
            assert classified.returncode == 0, f"{classified.stderr}\n{_logs(tmp_path)}"
            with out.open(encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
            assert [r["text"] for r in rows] == ["the crew was amazing", "lost my bag again", "flight lands at 5pm"]
            model = json.loads(bertqueue("--json", "model", "real-cli").stdout)
            assert all(r["label"] in model["labels"] for r in rows)

            failed = bertqueue(*train_args(data, tmp_path / "no-such-encoder", "--wait"))
            assert failed.returncode == 1, failed.stderr
            assert "failed: " in failed.stderr

            refused = bertqueue("--token", "not-a-token", "jobs")
            assert refused.returncode == 4 and "HTTP 401 unauthorized" in refused.stderr
    finally:
        stack.stop()
