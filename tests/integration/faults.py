"""Helpers for the fault-injection tests: a private redis-server, Celery workers and the reconciler as real
processes (started with the same commands as ``make run``), and job rows created directly through ``core``.

Nothing here goes through the web: jobs are committed in SQL and their messages sent with
``core.queue.enqueue_job``, exactly as the web does it.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import func, select

from core import jobs, runtime
from core.config import Settings
from core.datasets import scan_upload
from core.db import db
from core.queue import enqueue_job, make_celery
from core.schema import Dataset, Job, JobType, Prediction, TrainedModel
from core.specs import TrainRequest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], object], what: str, timeout: float, logs: Callable[[], str] = str) -> object:
    """Poll ``predicate`` every 0.1 s until it returns something true; fail with ``what`` and the logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{logs()}")
        time.sleep(0.1)


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Stack:
    """A PostgreSQL schema, a private non-persistent redis-server, and launchers for workers and the reconciler.

    ``env`` holds the settings every process gets (small leases and fast reconciler passes); tests add their own.
    """

    def __init__(self, tmp_path: Path, database_url: str, **env: str) -> None:
        self.tmp_path = tmp_path
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.model_store = tmp_path / "store"
        self.env = {
            **os.environ, "DATABASE_URL": database_url, "REDIS_URL": self.redis_url,
            "MODEL_STORE": str(self.model_store), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "CELERY_EAGER": "false", "PYTHONPATH": str(REPO_ROOT),
            "LEASE_SECONDS": "6", "REQUEUE_AFTER_S": "600", "RECONCILE_EVERY_S": "0.5", "JOB_MAX_ATTEMPTS": "10",
            "BERTQUEUE_TEST_FAULTS": "1", **env,
        }
        self.settings = runtime.configure(Settings.from_env(self.env))
        self.celery = make_celery(self.settings)
        self.processes: list[subprocess.Popen] = []
        self.redis_process: subprocess.Popen | None = None

    # ------------------------------------------------------------ processes

    def start_redis(self) -> None:
        """(Re)start the private redis-server on the same port, empty: no RDB, no AOF."""
        from scripts.run_stack import embedded_redis_command

        command = embedded_redis_command(self.redis_port)
        command[command.index("--dir") + 1] = str(self.tmp_path)
        self.redis_process = self._spawn("redis", command)
        wait_until(lambda: listening(self.redis_port), "redis-server listening", 10, self.logs)

    def kill_redis(self) -> None:
        signal_group(self.redis_process, signal.SIGKILL)
        self.redis_process.wait()
        wait_until(lambda: not listening(self.redis_port), "redis-server gone", 10, self.logs)

    def start_worker(self, queue: str, *, pool: str | None = None, concurrency: int = 1, node: str | None = None,
                     **env: str) -> subprocess.Popen:
        """A Celery worker with ``make run``'s command for ``queue`` (``train`` or ``classify``), ready to consume;
        ``node``: its node name (default: one of its own)."""
        from scripts.run_stack import celery_worker_commands

        n = len(self.processes)
        argv = celery_worker_commands(concurrency, train_concurrency=str(concurrency))[queue]
        argv = [(node or f"{queue}{n}@%h") if part == f"{queue}@%h" else part for part in argv]
        if pool is not None:
            argv[argv.index("--pool") + 1] = pool
        process = self._spawn(f"worker{n}-{queue}", argv, **env)
        log_path = self.tmp_path / f"worker{n}-{queue}.log"
        wait_until(lambda: b" ready." in log_path.read_bytes() or process.poll() is not None,
                   "worker ready", 90, self.logs)
        assert process.poll() is None, f"worker exited\n{self.logs()}"
        return process

    def start_reconciler(self) -> subprocess.Popen:
        from scripts.run_stack import reconciler_command

        return self._spawn("reconciler", reconciler_command())

    def _spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        with open(self.tmp_path / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, cwd=REPO_ROOT, env={**self.env, **env}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                signal_group(process, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            signal_group(process, signal.SIGKILL)
            process.wait()
        db.dispose()

    def logs(self, tail: int | None = 3000) -> str:
        """Every process's log (the last ``tail`` characters of each; None: all of it)."""
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-(tail or 0):]
                         for p in sorted(self.tmp_path.glob("*.log")))

    # ------------------------------------------------------------ rows and messages

    def dataset(self, rows: int = 200) -> int:
        """A dataset row with the first ``rows`` rows of the bundled sample (columns text, sentiment)."""
        from .conftest import sample_csv

        data = sample_csv(rows)
        scan = scan_upload(io.BytesIO(data), "tweets.csv")
        with db.session() as session:
            dataset = Dataset(name="tweets", filename="tweets.csv", columns=scan.columns, row_count=scan.row_count,
                              size_bytes=scan.size_bytes, sha256=scan.sha256, format=scan.format,
                              profile=scan.profile, content=data)
            session.add(dataset)
            session.flush()
            return dataset.id

    def model(self, artifact_dir: Path, labels: list[str]) -> int:
        with db.session() as session:
            model = TrainedModel(name=f"tiny-{time.monotonic_ns()}", version=1, family="bert", encoder="tiny",
                                 labels=labels, tasks={"sentiment": labels}, metrics={}, params={"family": "bert"},
                                 artifact_dir=str(artifact_dir))
            session.add(model)
            session.flush()
            return model.id

    def train_job(self, dataset_id: int, encoder: Path, *, send: bool = True, **params) -> str:
        """A committed training job on the tiny encoder (its message sent unless ``send`` is False)."""
        request = {"dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment",
                   "encoder": str(encoder), "epochs": 2, "batch_size": 4, "max_length": 32, **params}
        fault = request.pop("test_fault", None)
        stored = TrainRequest.model_validate(request).model_dump(mode="json")
        if fault is not None:
            stored["test_fault"] = fault  # read by worker.skeleton._test_fault before the params are validated
        with db.session() as session:
            job_id = jobs.create_job(session, JobType.TRAIN, stored, dataset_id=dataset_id).id
        if send:
            self.send(job_id)
        return job_id

    def classify_job(self, model_id: int, texts: list[str], *, send: bool = True) -> str:
        params = {"model_id": model_id, "text_count": len(texts), "texts_preview": texts[:3]}
        with db.session() as session:
            job_id = jobs.create_job(session, JobType.CLASSIFY, params, model_id=model_id, inputs=texts).id
        if send:
            self.send(job_id)
        return job_id

    def send(self, job_id: str) -> None:
        """Send (another) message for ``job_id``, as the web or the reconciler does."""
        enqueue_job(self.celery, job_id, self.job(job_id).type)

    def job(self, job_id: str) -> Job:
        with db.session() as session:
            return session.get(Job, job_id)

    def predictions(self, job_id: str) -> list[int]:
        with db.session() as session:
            return list(session.scalars(select(Prediction.index).where(Prediction.job_id == job_id)
                                        .order_by(Prediction.index)))

    def models_of(self, job_id: str) -> list[TrainedModel]:
        with db.session() as session:
            return list(session.scalars(select(TrainedModel).where(TrainedModel.training_job_id == job_id)))

    def count_models(self) -> int:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(TrainedModel))

    def wait_for(self, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 120) -> Job:
        return wait_until(lambda: (job := self.job(job_id)).status in statuses and job, f"job {job_id} in {statuses}",
                          timeout, self.logs)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)
