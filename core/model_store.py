"""Reconciling the model store's files with the model rows (SQL is the source of truth). Files only, no torch.

:func:`sweep` runs in the reconciler process, every pass, on both stores (``core.artifacts``):

* files that no live model row names, older than the grace period (so a publish in flight, whose row is being
  committed, is never touched), are removed: a folder of ``MODEL_STORE/models``, or the ``model_files`` rows of a
  key of the SQL store (``MODEL_STORE=sql``). They are left by a worker that died between publishing and committing,
  a failed record whose outcome was unknown, a deleted model whose files outlived its delete;
* a live model row whose files are gone gets ``files_missing_at`` (logged; cleared if the files come back).
  Downloads and jobs of such a model already answer ``model_files_missing``.

A process that does not see ``MODEL_STORE/models`` at all (no shared volume, or the SQL store) judges no folder;
rows of the SQL store are judged by any process, since the database holds their files. (Hosts' caches are not the
store: each host evicts its own, and drops a deleted model's copy on the workers' broadcast.)
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .config import SQL_MODEL_STORE
from .artifacts import REQUIRED_FILES, SQL_PREFIX, _delete_keys, is_sql
from .schema import ModelFile, TrainedModel, utcnow

log = logging.getLogger(__name__)

CONFIG_NAME = "bertqueue_config.json"  # models.io.CONFIG_NAME: written last, so a folder with it is complete
WEIGHTS_NAME = "model.safetensors"


@dataclass
class SweepResult:
    """What one sweep did: folders removed (names), model ids newly marked missing, and ids whose files are back."""

    removed: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)


def _owned(session: Session) -> set[str]:
    """The real paths of the folders live model rows name."""
    rows = session.scalars(select(TrainedModel.artifact_dir).where(TrainedModel.deleted_at.is_(None)))
    return {os.path.realpath(path) for path in rows}


def _has_files(directory: str) -> bool:
    return Path(directory, CONFIG_NAME).is_file() and Path(directory, WEIGHTS_NAME).is_file()


def _sweep_sql(session: Session, result: SweepResult, *, grace_s: float, now: float) -> set[str]:
    """Remove the SQL store's keys no live model row names, older than ``grace_s``; returns the keys that hold a
    complete model (both :data:`~core.artifacts.REQUIRED_FILES`)."""
    stored = session.execute(select(ModelFile.artifact_key, func.min(ModelFile.created_at),
                                    func.count().filter(ModelFile.name.in_(REQUIRED_FILES)))
                             .group_by(ModelFile.artifact_key)).all()
    owned = _owned_keys(session)
    orphans = []
    for key, created_at, _ in stored:
        created = created_at.timestamp() if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc).timestamp()
        if key not in owned and now - created >= grace_s:
            orphans.append(key)
    if orphans:
        owned = _owned_keys(session)  # looked at again: a row committed since the first look keeps its files
        orphans = [key for key in orphans if key not in owned]
        _delete_keys(session, orphans)
        for key in orphans:
            result.removed.append(SQL_PREFIX + key)
            log.warning("model store: removed the stored files of %s%s, which no model names", SQL_PREFIX, key)
    return {key for key, _, required in stored if required == len(REQUIRED_FILES) and key not in orphans}


def _owned_keys(session: Session) -> set[str]:
    """The SQL store's keys live model rows name."""
    return {path.removeprefix(SQL_PREFIX) for path in session.scalars(
        select(TrainedModel.artifact_dir).where(TrainedModel.deleted_at.is_(None),
                                                TrainedModel.artifact_dir.startswith(SQL_PREFIX)))}


def sweep(session: Session, model_store: str, *, grace_s: float, now: float | None = None) -> SweepResult:
    """One pass (see the module docstring); commits its marks in ``session``'s transaction. ``model_store``:
    ``MODEL_STORE`` (a directory, or ``sql``: no folder is judged then)."""
    result = SweepResult()
    now = time.time() if now is None else now
    complete_keys = _sweep_sql(session, result, grace_s=grace_s, now=now)
    models = Path(model_store) / "models"
    if model_store.strip().lower() == SQL_MODEL_STORE or not models.is_dir():
        _mark(session, result, lambda directory: (_key_complete(directory, complete_keys) if is_sql(directory)
                                                  else None))
        return result
    _sweep_folders(session, result, models, grace_s=grace_s, now=now)
    _mark(session, result, lambda directory: (_key_complete(directory, complete_keys) if is_sql(directory)
                                              else _has_files(directory)))
    return result


def _key_complete(artifact_dir: str, complete_keys: set[str]) -> bool:
    return artifact_dir.removeprefix(SQL_PREFIX) in complete_keys


def _sweep_folders(session: Session, result: SweepResult, models: Path, *, grace_s: float, now: float) -> None:
    """Remove the folders of ``MODEL_STORE/models`` no live model row names, older than ``grace_s``."""
    candidates = []
    owned = _owned(session)
    for path in models.iterdir():
        try:
            old = now - path.lstat().st_mtime >= grace_s
        except FileNotFoundError:  # removed meanwhile
            continue
        if old and os.path.realpath(path) not in owned:
            candidates.append(path)
    if candidates:
        owned = _owned(session)  # looked at again: a row committed since the first look keeps its folder
        for path in candidates:
            if os.path.realpath(path) in owned:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            result.removed.append(path.name)
            log.warning("model store: removed %s, which no model names", path)


def _mark(session: Session, result: SweepResult, has_files) -> None:
    """Mark live rows whose files are gone (``has_files(artifact_dir)``: None when this process cannot tell), and
    clear the mark of those whose files are back."""
    rows = session.execute(select(TrainedModel.id, TrainedModel.artifact_dir, TrainedModel.files_missing_at)
                           .where(TrainedModel.deleted_at.is_(None))).all()
    for model_id, directory, missing_at in rows:
        present = has_files(directory)
        if present is None:
            continue
        if not present and missing_at is None:
            result.missing.append(model_id)
        elif present and missing_at is not None:
            result.restored.append(model_id)
    if result.missing:
        session.execute(update(TrainedModel).where(TrainedModel.id.in_(result.missing),
                                                   TrainedModel.files_missing_at.is_(None))
                        .values(files_missing_at=utcnow()))
        log.error("model store: the files of model(s) %s are missing", ", ".join(map(str, result.missing)))
    if result.restored:
        session.execute(update(TrainedModel).where(TrainedModel.id.in_(result.restored))
                        .values(files_missing_at=None))
        log.info("model store: the files of model(s) %s are back", ", ".join(map(str, result.restored)))
