"""The worker's Celery app: configuration from ``core.queue``, one DB engine and model cache per child process.

Run: ``celery -A worker.celery_app worker -Q train,classify``. Nothing here touches CUDA: the device is
resolved lazily inside each child after the fork.
"""
from __future__ import annotations

import logging
import os
import sys

from celery import signals

from core import runtime
from core.config import Settings
from core.db import db
from core.queue import CLASSIFY_QUEUE, make_celery
from worker.lifecycle import die_with_parent
from worker.memory import tune_malloc

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The classification worker runs many job threads beside the batching engine's loop, which re-takes the GIL after
# every torch op; a 0.5 ms switch interval (Python's default: 5 ms) lets it back in sooner. Measured on 2 cores:
# 500 one-text jobs from 16 clients, 54 -> 68 jobs/s (see bench/README.md).
sys.setswitchinterval(0.0005)
tune_malloc()  # fewer malloc arenas for the many job threads (see worker/memory.py)

settings = runtime.configure(Settings.from_env())
app = make_celery(settings)

import worker.tasks  # noqa: E402,F401  (registers the tasks with this app)

log = logging.getLogger(__name__)


@signals.worker_init.connect
def _check_device(**_kwargs) -> None:
    # DEVICE=cuda (every GPU worker the launcher starts): no GPU is a start-up error, never a silent CPU fallback.
    # Probed in a child process: this parent forks the pool and must not initialise CUDA.
    from ml.device import DeviceUnavailableError
    from worker.device import EX_CONFIG, check_gpu_at_startup

    try:
        count = check_gpu_at_startup(settings.device)
    except DeviceUnavailableError as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(EX_CONFIG) from None  # a BaseException: Celery's signal dispatch lets it stop the worker
    if count is not None:
        log.info("DEVICE=%s: %d CUDA device(s) visible (CUDA_VISIBLE_DEVICES=%s)", settings.device, count,
                 os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))


@signals.worker_init.connect
def _preload_ml_stack(**_kwargs) -> None:
    # The worker's main process imports torch, transformers and the model code once, before any pool child forks:
    # every child -- and every replacement of one that crashed or was killed -- starts with them loaded (shared
    # copy-on-write) and takes its job at once instead of paying a multi-second import. Importing torch does not
    # initialize CUDA (the device is resolved in the child) nor start its thread pools.
    import time

    started = time.monotonic()
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import models.io  # noqa: F401
    import models.registry  # noqa: F401
    import ml.evaluation  # noqa: F401
    import ml.inference  # noqa: F401
    import ml.loop  # noqa: F401

    log.info("ML stack preloaded in %.1f s", time.monotonic() - started)


@signals.worker_process_init.connect
def _init_child_process(**_kwargs) -> None:
    # A pool child must not outlive its worker (killed with SIGKILL): an orphan would keep its job's lease fresh.
    die_with_parent()
    # Connections (and their sockets) inherited from the parent must not be shared with it.
    db.after_fork()
    log.info("worker child %s ready (database %s)", os.getpid(), db.engine.url.render_as_string(hide_password=True))
    _start_telemetry()  # each prefork child runs jobs: each reports itself (threads do not survive the fork)
    _start_predict_lane()


_worker: dict[str, object] = {}  # the node name, its queues and whether its pool forks (set by worker_init)


@signals.worker_init.connect
def _remember_worker(sender=None, **_kwargs) -> None:
    if sender is None:
        return
    pool = getattr(sender, "pool_cls", None)
    _worker.update(node=sender.hostname, queues=sorted(sender.app.amqp.queues.consume_from or []),
                   forks="prefork" in f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', pool)}")


@signals.worker_ready.connect
def _worker_ready(**_kwargs) -> None:
    if not _worker.get("forks", True):  # a thread pool runs the jobs in this very process
        _start_telemetry()
        _start_predict_lane()


def _start_predict_lane() -> None:
    """In a process that runs classification jobs: the /predict lane's drainers (worker.predict_lane)."""
    if CLASSIFY_QUEUE not in (_worker.get("queues") or []):
        return
    from worker import predict_lane

    try:
        predict_lane.start(app)
    except Exception:  # noqa: BLE001 - /predict calls then go through Celery messages, as every other job
        log.exception("the predict lane could not start")


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _stop_predict_lane(**_kwargs) -> None:
    # a warm shutdown: the batch in hand is finished (its jobs would otherwise wait for the reconciler)
    from worker import predict_lane

    predict_lane.stop()


def _start_telemetry() -> None:
    """In a process that runs jobs: its CUDA context on a GPU worker (after the fork), then its device and metrics
    published to Redis for the web (worker.telemetry)."""
    from worker import telemetry
    from worker.device import initialise_gpu

    try:
        initialise_gpu()
    except Exception:  # noqa: BLE001 - the first job reports the same error on its job row
        log.exception("CUDA could not be initialised")
    try:
        telemetry.start(str(_worker.get("node") or f"worker@{os.uname().nodename}"), list(_worker.get("queues") or []))
    except Exception:  # noqa: BLE001 - metrics must never stop a worker
        log.exception("telemetry could not start")


@signals.worker_ready.connect
def _prune_model_cache(**_kwargs) -> None:
    # With MODEL_STORE=sql, a model deleted while this host's workers were down keeps its cached copy here (the
    # delete's broadcast reached no one): removed at start (core.artifacts.prune_cache)
    from core import artifacts

    try:
        artifacts.prune_cache(runtime.settings())
    except Exception:  # noqa: BLE001 - a cache that is only larger than needed never stops a worker
        log.warning("could not prune the model cache", exc_info=True)
