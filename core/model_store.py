"""Reconciling the model store's folders with the model rows (SQL is the source of truth). Files only, no torch.

:func:`sweep` runs in the reconciler process, every pass:

* a folder of ``MODEL_STORE/models`` that no live model row names, older than the grace period (so a publish in
  flight, whose row is being committed, is never touched), is removed: a worker that died between publishing and
  committing, a failed record whose outcome was unknown, a deleted model whose files outlived its delete;
* a live model row whose files are gone gets ``files_missing_at`` (logged; cleared if the files come back).
  Downloads and jobs of such a model already answer ``model_files_missing``.

A process that does not see ``MODEL_STORE/models`` at all (no shared volume) judges nothing.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .schema import TrainedModel, utcnow

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


def sweep(session: Session, model_store: str, *, grace_s: float, now: float | None = None) -> SweepResult:
    """One pass (see the module docstring); commits its marks in ``session``'s transaction."""
    result = SweepResult()
    models = Path(model_store) / "models"
    if not models.is_dir():
        return result
    now = time.time() if now is None else now
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
    rows = session.execute(select(TrainedModel.id, TrainedModel.artifact_dir, TrainedModel.files_missing_at)
                           .where(TrainedModel.deleted_at.is_(None))).all()
    for model_id, directory, missing_at in rows:
        present = _has_files(directory)
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
    return result
