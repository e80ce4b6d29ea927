"""Fixtures for the command-line client's tests: the real Flask app (eager Celery) served over HTTP in a thread,
and a runner of ``bertqueue`` commands against it (click's CliRunner: in-process, output captured)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from cli.main import main


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve ``app`` on a free local port from a thread (threads per request); yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="cli-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def server_url(app) -> Iterator[str]:
    """The test app (SQLite, eager Celery: a queued job runs inside its request) at a real HTTP address."""
    import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

    with serving(app) as url:
        yield url


def invoke(url: str, token: str | None, *args, input: str | None = None) -> Result:
    """``bertqueue --url URL --token TOKEN ARGS...`` in-process (``input``: what is typed); stdout and stderr kept
    apart."""
    options = ["--url", url] + (["--token", token] if token is not None else [])
    return CliRunner().invoke(main, [*options, *map(str, args)], input=input, prog_name="bertqueue",
                              env={"BERTQUEUE_URL": None, "BERTQUEUE_TOKEN": None})


def ok(result: Result) -> str:
    """The command's stdout, after checking that it exited 0 (else its output in the failure)."""
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


@pytest.fixture
def bq(server_url: str, admin_token: str) -> Callable[..., Result]:
    """Run a ``bertqueue`` command as the test's admin against the served app."""
    return lambda *args, **kwargs: invoke(server_url, admin_token, *args, **kwargs)


def train_args(dataset, encoder, *extra: str) -> list[str]:
    """``train`` on the sample's text/sentiment columns with a tiny encoder: one short epoch."""
    return ["train", "--dataset", str(dataset), "--text-column", "text", "--label-column", "sentiment",
            "--encoder", str(encoder), "--epochs", "1", "--set", "batch_size=8", "--set", "max_length=32",
            "--set", "validation_split=0.25", "--set", "seed=1", *extra]
