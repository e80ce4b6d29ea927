"""Engine and session handling. ``db`` is defined here, outside any app, and configured by whoever runs."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


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

    def after_fork(self) -> None:
        """Drop connections inherited from a parent process without closing the parent's sockets."""
        if self._engine is not None:
            self._engine.dispose(close=False)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self.url, self._engine, self._sessionmaker = None, None, None


db = Database()
