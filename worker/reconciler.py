"""The reconciler: re-sends the messages of jobs that SQL says are waiting but Redis may have lost.

Redis is only transport; SQL holds every job. ``python -m worker.reconciler`` runs this as a small process of its
own (no torch, no worker pool), so busy training or classification slots can never starve it. Every
``RECONCILE_EVERY_S`` seconds it re-sends:

- every queued and running job at once when Redis lost its data since the last pass (a restart of a
  non-persistent server, a flush): the marker key this process keeps in Redis is gone. Copies that meet a live
  worker's fresh lease are dropped by the claim; a job whose worker died with the stack is taken over;
- otherwise queued jobs whose last message is ``REQUEUE_AFTER_S`` old and running jobs whose lease is stale, each
  further re-send of one job waiting twice as long (``core.jobs.lost_jobs``).

Each pass then sweeps the model store (``core.model_store.sweep``): folders no model row names, older than
``MODEL_SWEEP_GRACE_S``, are removed; live models whose files are gone are marked ``files_missing_at``.

Run exactly one per deployment (two are harmless: a job may get one extra message per pass).
"""
from __future__ import annotations

import logging
import signal
import threading

import redis
from celery import Celery

from core import model_store, runtime
from core.config import Settings
from core.db import db
from core.jobs import lost_jobs, unmark_resend
from core.queue import enqueue_job, make_celery

log = logging.getLogger("bertqueue.reconciler")

# Kept in the broker's Redis database with no expiry: its absence means Redis lost (or never had) its data.
MARKER_KEY = "bertqueue:reconciler:broker-marker"


def reconcile_once(app: Celery, settings: Settings, *, broker_lost: bool = False) -> int:
    """One pass: send a message for each job that looks lost (see the module docstring); returns how many."""
    with db.session() as session:
        lost = lost_jobs(session, requeue_after_s=settings.requeue_after_s, lease_seconds=settings.lease_seconds,
                         broker_lost=broker_lost)
    for done, (job_id, job_type) in enumerate(lost):
        try:
            enqueue_job(app, job_id, job_type)
        except Exception:
            # Redis went away mid-pass: the jobs not sent must not count as sent (their backoff would double)
            with db.session() as session:
                unmark_resend(session, [unsent for unsent, _ in lost[done:]])
            raise
    if lost:
        log.info("re-sent %d job message(s)%s", len(lost), " (Redis lost its data)" if broker_lost else "")
    return len(lost)


def sweep_model_store(settings: Settings) -> model_store.SweepResult:
    """Reconcile the model store's folders with the model rows (``core.model_store.sweep``)."""
    with db.session() as session:
        return model_store.sweep(session, settings.model_store, grace_s=settings.model_sweep_grace_s)


class Reconciler:
    """The periodic loop: detects a Redis that lost its data, then runs :func:`reconcile_once`."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or make_celery(settings)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.stopping = threading.Event()

    def broker_lost(self) -> bool:
        """True when the marker is gone (Redis restarted without persistence, or this is its first pass); sets it.

        The marker holds Redis's run id for the logs; a restart of a *persistent* Redis keeps the marker and the
        messages, so nothing needs re-sending then.
        """
        run_id = self.redis.info("server").get("run_id", "?")
        if self.redis.set(MARKER_KEY, run_id, nx=True):
            log.info("Redis (run id %s) has no marker: re-sending every waiting job", run_id)
            return True
        return False

    def run_pass(self) -> int:
        """Check the broker, then reconcile; then sweep the model store. Raises on an unreachable Redis or database
        (the loop logs it)."""
        sent = reconcile_once(self.app, self.settings, broker_lost=self.broker_lost())
        sweep_model_store(self.settings)
        return sent

    def run_forever(self) -> None:
        """Pass after pass, every ``reconcile_every_s``, until :meth:`stop`; errors are logged, never fatal."""
        log.info("reconciler: every %.1f s, requeue after %s s, lease %s s", self.settings.reconcile_every_s,
                 self.settings.requeue_after_s, self.settings.lease_seconds)
        while not self.stopping.is_set():
            try:
                self.run_pass()
            except Exception as exc:  # noqa: BLE001 - Redis or the database is down: try again next pass
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
            self.stopping.wait(self.settings.reconcile_every_s)

    def stop(self, *_args) -> None:
        self.stopping.set()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/reconciler] %(message)s")
    reconciler = Reconciler(runtime.configure(Settings.from_env()))
    signal.signal(signal.SIGTERM, reconciler.stop)
    signal.signal(signal.SIGINT, reconciler.stop)
    reconciler.run_forever()
    db.dispose()


if __name__ == "__main__":
    main()
