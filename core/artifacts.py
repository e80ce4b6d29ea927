"""Model files, wherever they are kept: the one way every process publishes, finds and removes a model's files.

Two stores, chosen by ``MODEL_STORE`` (``core.config``):

* **a directory** (the default, ``var/models``): every process sees the same folder (one host, or a volume shared
  by every container). A model row's ``artifact_dir`` is the path of its folder; this module adds nothing.
* **``sql``**: the files live in the database itself (``DATABASE_URL``), in :class:`~core.schema.ModelFile` rows
  and their :class:`~core.schema.ModelFileChunk` pieces of :data:`CHUNK_BYTES` (written and read one at a time, so
  no file is ever whole in memory). A model row's ``artifact_dir`` is ``sql:<key>`` (one key per training attempt
  and per import). Every host keeps its own cache (``MODEL_CACHE_DIR``, at most ``MODEL_CACHE_MB``): a model is
  downloaded into a private temporary folder, each file's size and sha256 checked, then renamed into place in one
  step, so a partial or corrupt download is never used; the least recently used folders are evicted to make room.

:func:`local_path` is what every reader calls (classification and evaluation workers before loading, the web before
a download): a verified local folder. :func:`publish` is what every writer calls (the training worker, the web's
import) before inserting the model row; :func:`discard` removes a model's files (a delete, or a publish whose row was
never committed) and :func:`forget_local` drops this host's cached copy (the workers' ``bertqueue_drop_model``
broadcast). The reconciler's sweep (``core.model_store``) removes stored files no model row names.

Files only: no torch here (the web uses it).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .config import Settings
from .db import db, is_transient
from .files import fsync_dir, fsync_tree
from .schema import ARTIFACT_KEY_MAX, ModelFile, ModelFileChunk, TrainedModel

log = logging.getLogger(__name__)

SQL_PREFIX = "sql:"  # a model row's artifact_dir in the SQL store: sql:<key>
CHUNK_BYTES = 4 * 1024 * 1024  # one ModelFileChunk: large enough for few round trips, small enough for any bytea
CONFIG_NAME = "bertqueue_config.json"  # models.io.CONFIG_NAME: a model folder without it is not a model
WEIGHTS_NAME = "model.safetensors"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
# how long a download is retried (store unreachable, checksum mismatch) before the job is given back for a later
# attempt (worker.skeleton, core.jobs.release)
FETCH_RETRY_S = 30.0
PIN_S = 60.0  # a cached model used this recently is never evicted: a process may be loading it right now
DISK_RESERVE_BYTES = 64 * 1024 * 1024  # a download never takes the cache's disk down to its last bytes
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# this host's cache events, per process: workers publish them with their telemetry snapshot (worker.telemetry), and
# the web's /metrics exports them as bertqueue_model_disk_cache_{hits,loads,evictions,fetch_failures}_total
cache_stats = {"hits": 0, "loads": 0, "evictions": 0, "fetch_failures": 0}


class ModelFilesMissing(LookupError):
    """The store holds no complete copy of the model's files (never published, removed, or a bad reference). A
    LookupError, as a vanished model is: the job fails with this message."""


class ArtifactUnavailable(RuntimeError):
    """The store could not hand the files over within :data:`FETCH_RETRY_S` (unreachable, or every download failed
    its checksum): nothing was kept, try again later."""


class CacheFull(OSError):
    """The model does not fit in this host's cache, even after evicting every model not in use."""


def is_sql(artifact_dir: str) -> bool:
    """Whether a model row's ``artifact_dir`` names files in the SQL store."""
    return artifact_dir.startswith(SQL_PREFIX)


def _key_of(artifact_dir: str) -> str:
    key = artifact_dir.removeprefix(SQL_PREFIX)
    if not (_KEY.fullmatch(key) and len(key) <= ARTIFACT_KEY_MAX):
        raise ModelFilesMissing(f"{artifact_dir!r} is not a model of the SQL store")
    return key


# ---------------------------------------------------------------- the SQL store


def _store_files(session: Session, key: str, folder: Path) -> int:
    """Write every file of ``folder`` (no hidden ones, no subfolders) under ``key``, replacing what a failed try left;
    returns the bytes stored. The caller commits: the files appear all at once or not at all."""
    _delete_keys(session, [key])
    total = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        file_id = session.scalar(insert(ModelFile).values(artifact_key=key, name=path.name, size_bytes=0, sha256="")
                                 .returning(ModelFile.id))
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            for seq, piece in enumerate(iter(lambda: f.read(CHUNK_BYTES), b"")):
                session.execute(insert(ModelFileChunk).values(file_id=file_id, seq=seq, data=piece))
                digest.update(piece)
                size += len(piece)
        session.execute(ModelFile.__table__.update().where(ModelFile.id == file_id)
                        .values(size_bytes=size, sha256=digest.hexdigest()))
        total += size
    return total


def _delete_keys(session: Session, keys: list[str]) -> int:
    """Delete the stored files of ``keys`` (chunks first: SQLite enforces no cascade unless asked); returns how many
    files went."""
    if not keys:
        return 0
    ids = select(ModelFile.id).where(ModelFile.artifact_key.in_(keys)).scalar_subquery()
    session.execute(delete(ModelFileChunk).where(ModelFileChunk.file_id.in_(ids)))
    return session.execute(delete(ModelFile).where(ModelFile.artifact_key.in_(keys))).rowcount or 0


@dataclass(frozen=True)
class _StoredFile:
    id: int
    name: str
    size: int
    sha256: str


def _stored_files(session: Session, key: str) -> list[_StoredFile]:
    """The files stored under ``key``; ModelFilesMissing unless they make a model."""
    rows = session.execute(select(ModelFile.id, ModelFile.name, ModelFile.size_bytes, ModelFile.sha256)
                           .where(ModelFile.artifact_key == key).order_by(ModelFile.name)).all()
    files = [_StoredFile(*row) for row in rows]
    names = {f.name for f in files}
    if not all(name in names for name in REQUIRED_FILES):
        raise ModelFilesMissing(f"the files of model {SQL_PREFIX}{key} are missing from the model store")
    for f in files:  # a row never makes this process write outside the folder
        if "/" in f.name or "\\" in f.name or f.name.startswith(".") or "\x00" in f.name:
            raise ModelFilesMissing(f"model {SQL_PREFIX}{key} holds a file named {f.name!r}")
    return files


class _ChecksumMismatch(Exception):
    pass


def _download(key: str, target: Path) -> int:
    """Write the files of ``key`` into the empty folder ``target``, one chunk in memory at a time, each checked
    against its size and sha256 (_ChecksumMismatch otherwise); returns the bytes written."""
    total = 0
    with db.session() as session:
        for stored in _stored_files(session, key):
            digest, size = hashlib.sha256(), 0
            with open(target / stored.name, "wb") as out:
                seq = 0
                while (piece := session.scalar(select(ModelFileChunk.data).where(
                        ModelFileChunk.file_id == stored.id, ModelFileChunk.seq == seq))) is not None:
                    out.write(piece)
                    digest.update(piece)
                    size += len(piece)
                    seq += 1
            if size != stored.size or digest.hexdigest() != stored.sha256:
                raise _ChecksumMismatch(f"{stored.name}: {size} bytes, sha256 {digest.hexdigest()[:12]}..., but the "
                                        f"store says {stored.size} bytes, {stored.sha256[:12]}...")
            total += size
    return total


def _stored_size(key: str) -> int:
    with db.session() as session:
        return sum(f.size for f in _stored_files(session, key))


# ---------------------------------------------------------------- this host's cache


class ModelCache:
    """The SQL store's copies on this host: ``<root>/models/<key>`` folders, complete by construction (renamed into
    place after their checksums passed), their modification time their last use; at most ``limit_bytes`` in all.

    Processes on one host share it: installs and evictions happen under a lock file (``<root>/locks/install``), and
    one download per key at a time (``<root>/locks/key-<key>``): a second process asking for the same model waits,
    then finds it cached. Downloads in progress live in ``<root>/downloads``.
    """

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root, self.limit_bytes = Path(root), limit_bytes
        # never "tmp" for downloads: trainings and imports keep their scratch there
        self.models, self.scratch, self.locks = self.root / "models", self.root / "downloads", self.root / "locks"

    def path(self, key: str) -> Path:
        return self.models / key

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        self.locks.mkdir(parents=True, exist_ok=True)
        with open(self.locks / name, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, key: str) -> Path:
        """The verified local folder of ``key``, downloaded (and room made) when this host has none."""
        path = self.path(key)
        if self._touch(path):
            cache_stats["hits"] += 1
            return path
        with self._locked(f"key-{key}"):
            if self._touch(path):  # another process downloaded it while this one waited
                cache_stats["hits"] += 1
                return path
            self._fetch(key)
            return path

    def _touch(self, path: Path) -> bool:
        """Mark a cached folder used now; False when there is none."""
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return all((path / name).is_file() for name in REQUIRED_FILES)

    def _fetch(self, key: str) -> None:
        """Download ``key`` into a private folder and rename it into place, retrying an unreachable store and a
        checksum mismatch (every try starts from an empty folder) for up to :data:`FETCH_RETRY_S`."""
        delay, deadline = 0.2, time.monotonic() + FETCH_RETRY_S
        while True:
            try:
                needed = _stored_size(key)
                self._make_room(needed, keep=key)
                self._download_and_install(key, needed)
                cache_stats["loads"] += 1
                return
            except (ModelFilesMissing, CacheFull):
                raise
            except (_ChecksumMismatch, DBAPIError) as exc:
                if isinstance(exc, DBAPIError) and not is_transient(exc):
                    raise
                cache_stats["fetch_failures"] += 1
                if time.monotonic() + delay > deadline:
                    raise ArtifactUnavailable(f"could not fetch model {SQL_PREFIX}{key} from the model store within "
                                              f"{FETCH_RETRY_S:g} s: {type(exc).__name__}: {exc}") from exc
                log.warning("model %s%s: download failed, retrying in %.1f s: %s", SQL_PREFIX, key, delay, exc)
            time.sleep(delay)
            delay = min(5.0, delay * 2)

    def _download_and_install(self, key: str, needed: int) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.scratch))
        try:
            try:
                _download(key, work)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                shutil.rmtree(work, ignore_errors=True)
                self._make_room(needed, keep=key, disk_full=True)  # everything evictable goes, then one more try
                work.mkdir()
                try:
                    _download(key, work)
                except OSError as again:
                    if again.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    raise CacheFull(again.errno, f"the disk of MODEL_CACHE_DIR ({self.root}) is full: model "
                                                 f"{SQL_PREFIX}{key} ({needed / 2**20:,.1f} MB) does not fit even "
                                                 "after evicting every cached model not in use") from None
            fsync_tree(work)  # the files reach the disk before the rename that makes them visible
            with self._locked("install"):
                self.models.mkdir(parents=True, exist_ok=True)
                if self.path(key).exists():  # an incomplete leftover (files removed by hand): never reused
                    _remove(self.path(key))
                os.rename(work, self.path(key))  # atomic: a reader sees no folder or a complete one
                fsync_dir(self.models)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def entries(self) -> list[tuple[float, Path, int]]:
        """(last use, folder, bytes) of every cached model, least recently used first."""
        found = []
        for path in self.models.iterdir() if self.models.is_dir() else ():
            if path.name.startswith("."):  # a folder being removed
                continue
            try:
                found.append((path.stat().st_mtime, path, sum(f.stat().st_size for f in path.iterdir())))
            except FileNotFoundError:  # evicted meanwhile
                continue
        return sorted(found)

    def _make_room(self, needed: int, *, keep: str, disk_full: bool = False) -> None:
        """Evict least recently used models until ``needed`` more bytes fit in ``MODEL_CACHE_MB`` and on the disk
        (``disk_full``: evict everything evictable); CacheFull when models in use leave too little."""
        if needed > self.limit_bytes:
            raise CacheFull(errno.ENOSPC, f"model {SQL_PREFIX}{keep} ({needed / 2**20:,.1f} MB) is larger than the "
                                          f"whole model cache (MODEL_CACHE_MB={self.limit_bytes // 2**20})")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked("install"):
            entries = self.entries()
            used = sum(size for _, _, size in entries)
            pinned_after = time.time() - PIN_S

            def fits() -> bool:
                free = shutil.disk_usage(self.root).free
                return not disk_full and used + needed <= self.limit_bytes and free >= needed + DISK_RESERVE_BYTES

            for last_use, path, size in entries:
                if fits():
                    return
                if path.name == keep or last_use >= pinned_after:
                    continue
                _remove(path)
                cache_stats["evictions"] += 1
                used -= size
                log.info("model cache: evicted %s (%.1f MB, unused for %.0f s)", path.name, size / 2**20,
                         time.time() - last_use)
            if disk_full or fits():
                return
        raise CacheFull(errno.ENOSPC, f"no room in MODEL_CACHE_DIR ({self.root}) for model {SQL_PREFIX}{keep} "
                                      f"({needed / 2**20:,.1f} MB): {used / 2**20:,.1f} MB of cached models in use in "
                                      f"the last {PIN_S:g} s (MODEL_CACHE_MB={self.limit_bytes // 2**20}), "
                                      f"{shutil.disk_usage(self.root).free / 2**20:,.0f} MB free on its disk")

    def forget(self, key: str) -> bool:
        """Remove this host's copy of ``key`` (a deleted model); True if there was one."""
        path = self.path(key)
        if not path.exists():
            return False
        with self._locked("install"):
            _remove(path)
        return True

    def keys(self) -> list[str]:
        return sorted(path.name for _, path, _ in self.entries())


STALE_SCRATCH_S = 6 * 3600  # a download folder this old was left by a killed process (a download takes minutes)


def prune_cache(settings: Settings) -> list[str]:
    """Remove this host's cached copies of models that are deleted (or gone), and old download scratch folders: a
    worker that was down when a model was deleted missed the broadcast. Run when a worker starts; returns the keys
    removed."""
    if not settings.sql_model_store:
        return []
    local = cache(settings)
    cutoff = time.time() - STALE_SCRATCH_S
    for folder in local.scratch.iterdir() if local.scratch.is_dir() else ():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:
            continue
    keys = local.keys()
    if not keys:
        return []
    with db.session() as session:
        live = set(session.scalars(select(TrainedModel.artifact_dir).where(
            TrainedModel.artifact_dir.in_([SQL_PREFIX + key for key in keys]), TrainedModel.deleted_at.is_(None))))
    gone = [key for key in keys if SQL_PREFIX + key not in live]
    for key in gone:
        local.forget(key)
        log.info("model cache: removed %s, whose model was deleted", key)
    return gone


def _remove(path: Path) -> None:
    """Rename a cached folder away first (one step: a reader never meets half of it), then delete it."""
    doomed = path.with_name(f".gone-{uuid.uuid4().hex}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def cache(settings: Settings) -> ModelCache:
    """This host's model cache, as ``settings`` place and bound it."""
    return ModelCache(Path(settings.model_cache_dir), settings.model_cache_mb * 1024 * 1024)


# ---------------------------------------------------------------- what callers use


def new_key(prefix: str) -> str:
    """A fresh key for an import (``imported-<hex>``); a training attempt's key is ``<job id>-<attempt>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def publish(settings: Settings, folder: Path, key: str) -> str:
    """Make the finished model in ``folder`` (it is consumed) available to every process under ``key``; returns
    the ``artifact_dir`` its model row names. Raises if the files are not stored (the caller inserts no row then).

    Directory store: renamed to ``MODEL_STORE/models/<key>`` after an fsync. SQL store: every file written under
    ``key`` in one transaction (retried on transient errors), then the local folder removed.
    """
    if not settings.sql_model_store:
        final = Path(settings.model_store) / "models" / key
        final.parent.mkdir(parents=True, exist_ok=True)
        fsync_tree(folder)  # the files reach the disk before the rename that publishes them
        os.replace(folder, final)
        fsync_dir(final.parent)
        return str(final)
    size = db.transact(lambda session: _store_files(session, key, folder), what=f"model {key}: store files")
    log.info("model %s%s: %.1f MB stored in SQL", SQL_PREFIX, key, size / 2**20)
    shutil.rmtree(folder, ignore_errors=True)
    return SQL_PREFIX + key


def local_path(settings: Settings, artifact_dir: str) -> Path:
    """A local folder holding the model's complete, verified files: the directory store's folder as it is, or this
    host's cached copy of a SQL-stored model (downloaded first when missing). Raises :class:`ModelFilesMissing`,
    :class:`ArtifactUnavailable` or :class:`CacheFull`."""
    if not is_sql(artifact_dir):
        return Path(artifact_dir)
    return cache(settings).get(_key_of(artifact_dir))


def cached_path(settings: Settings, artifact_dir: str) -> Path:
    """Where this host keeps (or would keep) the model's files, without fetching anything."""
    return cache(settings).path(_key_of(artifact_dir)) if is_sql(artifact_dir) else Path(artifact_dir)


def forget_local(settings: Settings, artifact_dir: str) -> bool:
    """Drop this host's cached copy of a SQL-stored model (it was deleted); True if there was one."""
    if not is_sql(artifact_dir):
        return False
    try:
        return cache(settings).forget(_key_of(artifact_dir))
    except ModelFilesMissing:
        return False


def discard(settings: Settings, artifact_dir: str) -> None:
    """Remove a model's files from the store (and this host's cache): a deleted model, or a publish whose row was
    never committed. A directory is removed only if it lies inside ``MODEL_STORE`` (a row never makes a process
    delete anything else). Failures are logged, not raised (the reconciler's sweep removes what is left)."""
    if is_sql(artifact_dir):
        try:
            key = _key_of(artifact_dir)
            db.transact(lambda session: _delete_keys(session, [key]), what=f"model {key}: delete files")
        except ModelFilesMissing:
            return
        except Exception:  # noqa: BLE001 - the sweep removes stored files no model row names
            log.warning("could not delete the stored files of %s", artifact_dir, exc_info=True)
        forget_local(settings, artifact_dir)
        return
    if settings.sql_model_store:
        log.warning("not removing %s: a directory, and MODEL_STORE is sql", artifact_dir)
        return
    store = Path(settings.model_store).resolve()
    try:
        target = Path(artifact_dir).resolve()
    except (OSError, RuntimeError, ValueError):
        return
    if target == store or store not in target.parents:
        log.warning("not removing %s: it is not inside MODEL_STORE (%s)", artifact_dir, store)
        return
    try:
        shutil.rmtree(target)
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("could not remove the files of a model at %s", target, exc_info=True)


def discard_attempts(settings: Settings, job_id: str, keep: str) -> None:
    """Remove the stored files of a training job's earlier attempts (keys ``<job_id>-<n>`` other than ``keep``): a
    worker killed between publishing and recording leaves them, and the new claim proves that attempt is over."""
    if not settings.sql_model_store:
        for path in (Path(settings.model_store) / "models").glob(f"{job_id}-*"):
            if path.name != keep:
                log.info("job %s: removing %s, left by an earlier attempt", job_id, path)
                shutil.rmtree(path, ignore_errors=True)
        return

    def remove(session: Session) -> int:
        keys = [k for k in session.scalars(select(ModelFile.artifact_key).distinct()
                                           .where(ModelFile.artifact_key.like(f"{job_id}-%"))) if k != keep]
        return _delete_keys(session, keys)

    if removed := db.transact(remove, what=f"job {job_id}: remove earlier attempts' files"):
        log.info("job %s: removed %d stored file(s) of earlier attempts", job_id, removed)
