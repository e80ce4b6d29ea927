"""The model registry: a model's name and its version, counted per owner and name.

Training a model under an existing name (or importing one) creates the next version of that name. Versions are
allocated in the inserting transaction; the ``(owner_id, name, version)`` unique constraint settles races, and
:func:`insert_model` reports a lost race as None so its caller retries in a fresh transaction.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .schema import TrainedModel

VERSION_ATTEMPTS = 3  # transactions a caller should try before giving up on a contended name


def next_version(session: Session, owner_id: int | None, name: str) -> int:
    """The version the next model called ``name`` of ``owner_id`` gets (deleted versions still count)."""
    latest = session.scalar(select(func.max(TrainedModel.version)).where(
        TrainedModel.name == name, TrainedModel.owner_id == owner_id))
    return (latest or 0) + 1


def insert_model(session: Session, *, name: str, owner_id: int | None, **fields: Any) -> TrainedModel | None:
    """Add a model row named ``name`` with the next version and flush it; None when another transaction took that
    version first (the session is then rolled back: retry the whole transaction).

    ``fields``: the other :class:`~core.schema.TrainedModel` columns (family, encoder, labels, tasks, artifact_dir...).
    """
    model = TrainedModel(name=name, owner_id=owner_id, version=next_version(session, owner_id, name), **fields)
    session.add(model)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    return model
