"""Who may see and act on what: SQL conditions that scope every query of the web to the calling user.

Datasets, jobs and models belong to their creator (``owner_id``); predictions belong to their job. A user sees
their own rows only, plus the datasets marked ``shared`` (the bundled samples); an admin sees all.
Anything outside a user's scope is reported as missing (404), so ids of others are never confirmed.
"""
from __future__ import annotations

from sqlalchemy import ColumnElement, or_, true

from .accounts import Principal
from .schema import Dataset, Job, TrainedModel

Owned = type[Dataset] | type[Job] | type[TrainedModel]


def visible(entity: Owned, user: Principal) -> ColumnElement[bool]:
    """Rows of ``entity`` that ``user`` may read."""
    if user.is_admin:
        return true()
    if entity is Dataset:
        return or_(Dataset.owner_id == user.id, Dataset.shared.is_(True))
    return entity.owner_id == user.id


def writable(entity: Owned, user: Principal) -> ColumnElement[bool]:
    """Rows of ``entity`` that ``user`` may change (cancel, reconfigure): their own; an admin's: all."""
    return true() if user.is_admin else entity.owner_id == user.id
