"""Engine and session handling. ``db`` is defined here, outside any app, and configured by whoever runs."""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a transient database error is retried before it counts: long enough to ride out a PostgreSQL restart or
# failover, or a SQLite write lock held by a slow writer.
TRANSIENT_RETRY_S = 30.0


def is_transient(error: BaseException) -> bool:
    """A database error that may pass if the transaction is simply tried again: a lock or deadlock, a dropped or
    refused connection (``OperationalError``), or any error that invalidated its connection. Constraint violations
    and bad statements are not."""
    return isinstance(error, OperationalError) or (isinstance(error, DBAPIError) and error.connection_invalidated)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the web read while a worker writes; busy_timeout waits for the write lock instead of failing.
    # synchronous=NORMAL is WAL's recommended setting: commits no longer fsync (only checkpoints do), so the write
    # lock is held for microseconds instead of a disk flush; a power cut may lose the last commits, never corrupt
    # the file, and a crash of the process loses nothing. (Production runs on PostgreSQL.)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Holds one engine and session factory per process; reconfigurable (tests) and fork-safe (workers)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None

    def configure(self, url: str) -> None:
        """Point this process at ``url``. Calling again with the same url keeps the existing engine."""
        if self._engine is not None and url == self.url:
            return
        self.dispose()
        # Pre-ping finds connections a server dropped; a SQLite file has no server, so it is pure overhead there.
        # Pools are sized for a worker's many job threads (and the web's request threads) without queueing.
        kwargs: dict = {"pool_pre_ping": not url.startswith("sqlite"), "pool_size": 20, "max_overflow": 20}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if url.startswith("sqlite:///"):
                from pathlib import Path

                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        self.url, self._engine = url, engine
        self._sessionmaker = sessionmaker(engine, expire_on_commit=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("database not configured: call db.configure(url) first")
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error and is always closed."""
        if self._sessionmaker is None:
            raise RuntimeError("database not configured: call db.configure(url) first")
        session = self._sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def transact(self, work: Callable[[Session], T], *, what: str, retry_for_s: float = TRANSIENT_RETRY_S) -> T:
        """Run ``work(session)`` in a transaction of its own, retried with backoff on transient errors.

        Every try gets a fresh session (an invalidated connection is replaced), so ``work`` must be safe to run again
        from the start: conditional UPDATEs and ``ON CONFLICT DO NOTHING`` inserts are. Backoff doubles from 0.1 s
        to at most 5 s (with jitter) and gives up after ``retry_for_s``, re-raising the last error.
        """
        delay, deadline = 0.1, time.monotonic() + retry_for_s
        while True:
            try:
                with self.session() as session:
                    return work(session)
            except DBAPIError as error:
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    raise
                cause = str(error.orig or error).strip().splitlines() or [type(error).__name__]
                log.warning("%s: transient database error, retrying in %.1f s: %s", what, delay, cause[0])
            time.sleep(delay * random.uniform(0.5, 1.0))  # jitter: workers that failed together do not retry together
            delay = min(5.0, delay * 2)

    def after_fork(self) -> None:
        """Drop connections inherited from a parent process without closing the parent's sockets."""
        if self._engine is not None:
            self._engine.dispose(close=False)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self.url, self._engine, self._sessionmaker = None, None, None


db = Database()
