"""Who may see and act on what: SQL conditions that scope every query of the web to the calling user.

Datasets, jobs and models belong to their creator (``owner_id``); predictions belong to their job. A user sees
their own rows only, plus the datasets marked ``shared`` (the bundled samples); an admin sees all.
Anything outside a user's scope is reported as missing (404), so ids of others are never confirmed.
"""
from __future__ import annotations

from sqlalchemy import BindParameter, ColumnElement, and_, bindparam, or_, true

from .accounts import Principal
from .schema import Dataset, Job, TrainedModel

Owned = type[Dataset] | type[Job] | type[TrainedModel]


def visible(entity: Owned, user: Principal, *, deleted: bool = False) -> ColumnElement[bool]:
    """Rows of ``entity`` that ``user`` may read. A deleted dataset is read by nobody (it answers 404, like a
    missing one) unless ``deleted``: e.g. to name it on the page of a job that used it."""
    return _visible(entity, user.is_admin, user.id, deleted)


def visible_to_viewer(entity: Owned, is_admin: bool, *, deleted: bool = False) -> ColumnElement[bool]:
    """:func:`visible` for a statement built once: the user's id is its bound parameter ``viewer_id``."""
    return _visible(entity, is_admin, bindparam("viewer_id"), deleted)


def _visible(entity: Owned, is_admin: bool, viewer: int | BindParameter, deleted: bool) -> ColumnElement[bool]:
    if entity is Dataset:
        scope = true() if is_admin else or_(Dataset.owner_id == viewer, Dataset.shared.is_(True))
        return scope if deleted else and_(scope, Dataset.deleted_at.is_(None))
    if is_admin:
        return true()
    return entity.owner_id == viewer


def writable(entity: Owned, user: Principal) -> ColumnElement[bool]:
    """Rows of ``entity`` that ``user`` may change (cancel, reconfigure): their own; an admin's: all."""
    return true() if user.is_admin else entity.owner_id == user.id
