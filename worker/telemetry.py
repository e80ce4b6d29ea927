"""This worker process's device and metrics, published to Redis for the web's ``/metrics`` and ``/readyz``.

The format and the reasons for Redis are in ``core.telemetry``. Here: the :data:`recorder` that the batching engine
(``ml.batching.BATCH_OBSERVERS``) and the job skeleton (:func:`job_finished`) feed, and the publisher thread
started in each process that runs jobs (``worker.celery_app``: the thread-pool worker's process, each prefork
child). CUDA is only asked about once this process initialised it itself (its first job on the GPU): the telemetry
never initialises CUDA, which a prefork parent must not do before forking.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from core import runtime
from core.telemetry import BATCH_ROW_BUCKETS, INTERVAL_S, JOB_SECONDS_BUCKETS, TTL_S, Histogram, worker_key

log = logging.getLogger(__name__)


class Recorder:
    """This process's metrics since it started (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batch_rows = Histogram(BATCH_ROW_BUCKETS)
        self.real_tokens = 0
        self.padded_tokens = 0
        self.jobs: dict[tuple[str, str, str], Histogram] = {}

    def on_batch(self, engine: Any, rows: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        """A batch ran (an ``ml.batching.BATCH_OBSERVERS`` entry)."""
        with self._lock:
            self.batch_rows.observe(rows)
            self.real_tokens += real_tokens
            self.padded_tokens += padded_tokens

    def job_finished(self, job_type: str, task_type: str, outcome: str, seconds: float) -> None:
        """A claimed job's attempt ended (``outcome``: succeeded, failed, stopped, or released: given back for a later
        attempt, its model store unreachable) after ``seconds``."""
        with self._lock:
            key = (job_type, task_type, outcome)
            if key not in self.jobs:
                self.jobs[key] = Histogram(JOB_SECONDS_BUCKETS)
            self.jobs[key].observe(seconds)

    def metrics(self) -> dict[str, Any]:
        """The metrics part of a snapshot."""
        from core.artifacts import cache_stats as disk_cache_stats
        from ml.inference import cache_stats  # ml.inference is loaded in every worker (preloaded by celery_app)

        with self._lock:
            return {
                "batch_rows": self.batch_rows.to_json(),
                "real_tokens": self.real_tokens,
                "padded_tokens": self.padded_tokens,
                "model_memory_cache": dict(cache_stats),
                "model_disk_cache": dict(disk_cache_stats),
                "jobs": [{"type": t, "task_type": task, "outcome": outcome, "seconds": histogram.to_json()}
                         for (t, task, outcome), histogram in sorted(self.jobs.items())],
            }


recorder = Recorder()
_task_types: dict[int, str] = {}  # model id -> task type (a model's task type never changes)


def task_type_of(job: Any) -> str:
    """The task type a job works on: a training's from its params, another job's from its model (read once per
    model and process)."""
    from core import task_types

    try:
        if job.type == "train" or job.model_id is None:
            return task_types.of_params(job.params or {}).name
        if job.model_id not in _task_types:
            from sqlalchemy import select

            from core.db import db
            from core.schema import TrainedModel

            with db.session() as session:
                params = session.scalar(select(TrainedModel.params).where(TrainedModel.id == job.model_id))
            _task_types[job.model_id] = task_types.of_params(params or {}).name
        return _task_types[job.model_id]
    except Exception:  # noqa: BLE001 - a metric label must never fail a job
        log.debug("telemetry: no task type for job %s", getattr(job, "id", "?"), exc_info=True)
        return "unknown"


def job_finished(job: Any, outcome: str, seconds: float) -> None:
    """Record a claimed job's attempt (called by ``worker.skeleton.run_job``)."""
    recorder.job_finished(job.type, task_type_of(job), outcome, seconds)


def device_state(serving: bool = False) -> dict[str, Any]:
    """This process's device: the ``DEVICE`` setting (or the CUDA device in use), and once CUDA is initialised here,
    the GPU's name, memory used / total (the whole device, every process on it) and the precision it runs in:
    ``serving`` (a classification worker), the forward passes' (``ml.precision.inference_autocast``: half on CUDA
    whatever ``AMP`` says), else training's under ``AMP``."""
    settings = runtime.settings()
    state: dict[str, Any] = {"device": settings.device, "device_name": None, "amp": None,
                             "gpu_memory_used_bytes": None, "gpu_memory_total_bytes": None}
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():  # the CPU, or a GPU this process has not used yet
        state["amp"] = "fp32" if settings.device == "cpu" else None
        return state
    from ml.precision import amp_dtype, dtype_name

    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    state.update(device=f"cuda:{index}", device_name=torch.cuda.get_device_name(index),
                 amp=dtype_name(amp_dtype(f"cuda:{index}", "auto" if serving else settings.amp)),
                 gpu_memory_used_bytes=int(total - free), gpu_memory_total_bytes=int(total))
    return state


def snapshot(node: str, queues: list[str]) -> dict[str, Any]:
    """This process's snapshot (``core.telemetry``)."""
    from .serving import engine_options

    state = device_state(serving="classify" in queues and "train" not in queues)
    limits = engine_options(state["device"] if state["device"] != "auto" else "cpu")
    return {"worker": node, "pid": os.getpid(), "host": socket.gethostname(), "queues": queues, **state,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "max_batch_tokens": limits.max_batch_tokens, "max_batch_size": limits.max_batch_size,
            "inference_streams": limits.streams,
            "updated_at": time.time(), **recorder.metrics()}


class Publisher:
    """The thread that writes this process's snapshot to Redis every ``INTERVAL_S`` seconds."""

    def __init__(self, node: str, queues: list[str], redis_url: str) -> None:
        self.node, self.queues, self.redis_url = node, queues, redis_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._failing = False

    def start(self) -> "Publisher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def publish_once(self, client: Any) -> None:
        """Write the snapshot now."""
        client.set(worker_key(self.node, os.getpid()), json.dumps(snapshot(self.node, self.queues)), ex=TTL_S)

    def _run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        while True:
            try:
                self.publish_once(client)
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - metrics must never take the worker down
                if not self._failing:  # once per outage, not every beat
                    log.warning("telemetry: could not publish this worker's snapshot (%s)", exc)
                self._failing = True
            if self._stop.wait(INTERVAL_S):
                return


_publisher: Publisher | None = None


def start(node: str, queues: list[str]) -> Publisher | None:
    """Feed the engine's batches to :data:`recorder` and start this process's publisher (once per process; none in
    eager mode, where no worker runs)."""
    global _publisher
    settings = runtime.settings()
    if settings.celery_eager or (_publisher is not None and _publisher._thread.is_alive()):
        return _publisher
    from ml import batching

    if recorder.on_batch not in batching.BATCH_OBSERVERS:
        batching.BATCH_OBSERVERS.append(recorder.on_batch)
    _publisher = Publisher(node, queues, settings.redis_url).start()
    return _publisher
