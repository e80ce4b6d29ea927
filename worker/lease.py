"""A claimed job's lease: who holds it (one identity per attempt) and the keeper thread that keeps it fresh.

Every job type runs under a :class:`Lease` (``worker.skeleton.run_job`` opens it); the ML loops only report
``progress()`` and poll ``should_stop()``.
"""
from __future__ import annotations

import contextvars
import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from core import jobs
from core.db import db
from core.schema import utcnow

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 2.0
MAX_ETA_S = 10 * 365 * 86400.0  # an estimate past this is noise (and past datetime's range when absurd)

# The lease owner of the attempt this thread runs. Per attempt, not per process: the classification worker runs
# many jobs in one process, and a job re-claimed by that same process (its lease went stale during a database
# outage, say) must not let the old attempt's heartbeat, time limit or failure pass for the new one's.
_attempt_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("bertqueue_attempt_owner", default=None)


def worker_id() -> str:
    """The current attempt's identity in job leases: ``"<host>#<nonce>:<pid>"`` (see ``core.jobs.owner_is_gone``).

    Set by each claim for the thread that runs the job; outside an attempt, this process's ``"<host>:<pid>"``.
    """
    return _attempt_owner.get() or f"{socket.gethostname()}:{os.getpid()}"


def start_attempt() -> str:
    """A new attempt identity, made this thread's ``worker_id()``: every write of the attempt (lease, results,
    success, failure) names it."""
    owner = f"{socket.gethostname()}#{uuid.uuid4().hex[:12]}:{os.getpid()}"
    _attempt_owner.set(owner)
    return owner


class Lease:
    """Keeps a claimed job's lease fresh for as long as the work runs.

    One keeper thread per process (:class:`_LeaseKeeper`) renews every open lease every few seconds whatever the
    ML code is doing (loading or converting an encoder, one huge step, building a predictor), so a slow phase never
    looks like a dead worker, and a worker running many small jobs at once does not pay a thread and an UPDATE per
    job: a job shorter than one beat interval costs no heartbeat at all (the claim set ``heartbeat_at``). The ML
    loops only report ``progress()`` (written with the next beat) and poll ``should_stop()`` (the job was
    cancelled, another worker took it over, or it ran past its time limit).

    ``progress(fraction, info)``: ``info["eta_seconds"]`` becomes the job's ``eta_at`` and ``info["history"]`` (a
    training's evaluations so far) its live ``metrics.history``, both written by the next beat in the same UPDATE;
    the history only when it grew, so a long training does not rewrite the same JSON every few seconds.

    ``time_limit_s``: past it the keeper fails the job ("... exceeded the time limit of N s") and stops renewing,
    even if the work is stuck where it never polls ``should_stop()``; the job is no longer running in SQL at once.
    """

    def __init__(self, job_id: str, lease_seconds: float, every_s: float = HEARTBEAT_EVERY_S, *,
                 time_limit_s: float | None = None, kind: str = "the job") -> None:
        self.job_id, self.owner = job_id, worker_id()
        self.every_s = max(0.2, min(every_s, lease_seconds / 4))
        self.time_limit_s, self.kind = time_limit_s, kind
        self.lost = self.timed_out = False
        self.next_beat = self.deadline = 0.0
        self._progress: float | None = None
        self._eta_at: datetime | None = None
        self._history: list | None = None  # the latest history reported, written while it differs from the stored
        self._history_written = 0  # entries of the history stored by a beat
        self._lock = threading.Lock()  # progress() runs on the work's thread, beat() on the keeper's

    def __enter__(self) -> "Lease":
        now = time.monotonic()
        self.next_beat = now + self.every_s
        self.deadline = now + self.time_limit_s if self.time_limit_s else float("inf")
        _keeper().add(self)
        return self

    def __exit__(self, *_exc) -> None:
        _keeper().remove(self)

    def beat(self) -> None:
        """Renew the lease now (and write the latest progress); marks the lease lost if the job is no longer ours."""
        self.next_beat = time.monotonic() + self.every_s
        with self._lock:
            progress, eta_at, history = self._progress, self._eta_at, self._history
        fresh = history is not None and len(history) != self._history_written
        try:
            with db.session() as session:
                owned = jobs.heartbeat(session, self.job_id, self.owner, progress, eta_at=eta_at,
                                       metrics={"history": history} if fresh else None)
        except SQLAlchemyError as exc:
            # A database hiccup must not kill hours of work; the next beat tries again.
            log.warning("job %s: heartbeat failed (%s); continuing", self.job_id, exc)
            return
        if not owned:
            self.lost = True
        elif fresh:
            self._history_written = len(history)

    def expire(self) -> None:
        """The time limit has passed: fail the job (if still ours) and tell the work to stop."""
        self.timed_out = self.lost = True
        message = self.time_limit_message()
        log.warning("job %s: %s", self.job_id, message)
        try:  # short retries: this runs on the keeper thread, which renews every other job's lease too
            db.transact(lambda session: jobs.fail(session, self.job_id, message, worker_id=self.owner),
                        what=f"job {self.job_id}: time limit", retry_for_s=5.0)
        except SQLAlchemyError as exc:  # the skeleton fails it again when the work stops
            log.warning("job %s: could not record the time limit (%s)", self.job_id, exc)

    def time_limit_message(self) -> str:
        """The job's error when it ran past ``time_limit_s``."""
        return f"{self.kind} exceeded the time limit of {self.time_limit_s:g} s"

    def progress(self, fraction: float, info: dict | None = None) -> None:
        """Record the work's progress (and ETA, curves: see the class docstring) for the next beat."""
        eta, history = (info or {}).get("eta_seconds"), (info or {}).get("history")
        with self._lock:
            self._progress = fraction
            if isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta < MAX_ETA_S:
                self._eta_at = utcnow() + timedelta(seconds=float(eta))
            if isinstance(history, list):
                self._history = _finite_json(history)  # a copy: the loop goes on appending to its own list

    def should_stop(self) -> bool:
        """True once the job is no longer ours to run: cancelled, taken over, or out of time."""
        return self.lost


def _finite_json(value):
    """A copy of ``value`` with non-finite floats as None: PostgreSQL's JSON has no NaN (a diverged loss)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(item) for item in value]
    return value


class _LeaseKeeper:
    """The process's one heartbeat thread: beats each open :class:`Lease` when it is due."""

    TICK_S = 0.2

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases.add(lease)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            with self._lock:
                if not self._leases:
                    self._thread = None
                    return
                now = time.monotonic()
                expired = [lease for lease in self._leases if not lease.lost and lease.deadline <= now]
                due = [lease for lease in self._leases if not lease.lost and lease.next_beat <= now
                       and lease not in expired]
            for lease in expired:
                lease.expire()
            for lease in due:
                lease.beat()


_keepers: dict[int, _LeaseKeeper] = {}


def _keeper() -> _LeaseKeeper:
    # one per process: a forked child must not share (or wait on) its parent's thread
    pid = os.getpid()
    if pid not in _keepers:
        _keepers[pid] = _LeaseKeeper()
    return _keepers[pid]
