"""`make run`'s launcher brings up embedded Redis + migrations + reconciler + workers + web, restarts a child that
dies (a process manager's job), and Ctrl-C stops all of it."""
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


ADMIN_TOKEN = "launcher-test-admin-token-0123456789"


def _get(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _ready(url: str) -> bool:
    """Whether the probe answers 200; a probe that does not answer in time (a busy machine still starting the
    workers) is "not ready yet", not an error: the caller's deadline decides."""
    try:
        return _get(url)[0] == 200
    except (TimeoutError, urllib.error.URLError, ConnectionError):
        return False


def _child(launcher: psutil.Process, marker: str) -> psutil.Process:
    """The launcher's direct child whose command line contains ``marker``."""
    matches = [c for c in launcher.children() if marker in " ".join(c.cmdline())]
    assert len(matches) == 1, [c.cmdline() for c in launcher.children()]
    return matches[0]


def _wait_for(predicate, what: str, output, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s:\n{output()}"
        time.sleep(0.25)


def test_launcher_runs_the_platform_restarts_dead_children_and_stops_cleanly(tmp_path):
    web_port, redis_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CELERY_EAGER")}
    env.update(PORT=str(web_port), EMBEDDED_REDIS_PORT=str(redis_port), WORKER_CONCURRENCY="1",
               DATABASE_URL=f"sqlite:///{tmp_path / 'quickstart.db'}", MODEL_STORE=str(tmp_path / "models"),
               BERTQUEUE_ADMIN_TOKEN=ADMIN_TOKEN, ADMIN_CREDENTIALS_FILE=str(tmp_path / "admin_credentials"))
    log_path = tmp_path / "launcher.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "scripts/run_stack.py"], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        return log_path.read_text(errors="replace")

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"launcher exited early:\n{output()}")
            if _listening(web_port) and _ready(f"http://127.0.0.1:{web_port}/readyz"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the platform did not become ready in 120 s")
        assert _listening(redis_port), "embedded Redis is not listening"
        status, body = _get(f"http://127.0.0.1:{web_port}/api/v1/datasets")
        assert status == 200
        items = body["items"] if isinstance(body, dict) else body
        assert {d["name"] for d in items} >= {"sample_tweets", "sample_tweets_multitask"}
        assert "created the admin account" in output() and "web login: admin / " in output()  # first start
        assert (tmp_path / "admin_credentials").stat().st_mode & 0o777 == 0o600
        launcher = psutil.Process(process.pid)
        assert _child(launcher, "worker.reconciler")  # the reconciler runs as a process of its own

        # A process manager's job: the embedded Redis and a worker die; both come back, the rest keeps running.
        redis_server, classify = _child(launcher, "redis-server"), _child(launcher, "classify@%h")
        redis_server.kill()
        classify.kill()
        _wait_for(lambda: "redis restarted" in output() and "classify worker restarted" in output(),
                  "the restarts", output)
        assert "exited with code -9; restarting it in 1 s" in output()
        _wait_for(lambda: _listening(redis_port), "Redis listening again", output)
        assert _child(launcher, "redis-server").pid != redis_server.pid
        assert _child(launcher, "classify@%h").pid != classify.pid
        assert process.poll() is None and _get(f"http://127.0.0.1:{web_port}/readyz")[0] == 200

        descendants = launcher.children(recursive=True)
        assert len(descendants) >= 5  # redis, reconciler, two workers (+ pool), web (+ workers)
        process.send_signal(signal.SIGINT)  # Ctrl-C, possibly while the restarted worker is still starting up
        process.wait(timeout=60)
        assert process.returncode == 0, output()
        assert "shutting down" in output()
        time.sleep(0.5)
        assert not _listening(web_port) and not _listening(redis_port), output()
        survivors = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not survivors, f"processes outlived the launcher: {[p.cmdline() for p in survivors]}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
