"""`make run`'s launcher brings up embedded Redis + migrations + worker + web, and Ctrl-C stops all of it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_launcher_runs_the_platform_and_stops_cleanly(tmp_path):
    web_port, redis_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CELERY_EAGER")}
    env.update(PORT=str(web_port), EMBEDDED_REDIS_PORT=str(redis_port), WORKER_CONCURRENCY="1",
               DATABASE_URL=f"sqlite:///{tmp_path / 'quickstart.db'}", MODEL_STORE=str(tmp_path / "models"))
    process = subprocess.Popen([sys.executable, "scripts/run_stack.py"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"launcher exited early:\n{process.stdout.read().decode(errors='replace')}")
            if _listening(web_port) and _get(f"http://127.0.0.1:{web_port}/readyz")[0] == 200:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the platform did not become ready in 120 s")
        assert _listening(redis_port), "embedded Redis is not listening"
        status, body = _get(f"http://127.0.0.1:{web_port}/api/v1/datasets")
        assert status == 200
        items = body["items"] if isinstance(body, dict) else body
        assert {d["name"] for d in items} >= {"sample_tweets", "sample_tweets_multitask"}
        descendants = psutil.Process(process.pid).children(recursive=True)
        assert len(descendants) >= 3  # redis, worker (+ pool), web (+ workers)
        process.send_signal(signal.SIGINT)  # Ctrl-C, possibly while the worker is still starting up
        output = process.communicate(timeout=60)[0].decode(errors="replace")
        assert process.returncode == 0, output
        assert "shutting down" in output
        time.sleep(0.5)
        assert not _listening(web_port) and not _listening(redis_port), output
        survivors = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not survivors, f"processes outlived the launcher: {[p.cmdline() for p in survivors]}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
