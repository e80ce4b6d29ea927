"""The model registry: a model's name and its version, counted per owner and name; references to a model by
name (``"sentiment"``: the latest live version, ``"sentiment:3"``), and deleting a model.

Training a model under an existing name (or importing one) creates the next version of that name. Versions are
allocated in the inserting transaction; the ``(owner_id, name, version)`` unique constraint settles races, and
:func:`insert_model` reports a lost race as None so its caller retries in a fresh transaction.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import set_committed_value

from .accounts import Principal
from .db import db
from .ownership import visible, visible_to_viewer, writable
from .schema import Job, JobStatus, TrainedModel, utcnow

log = logging.getLogger(__name__)

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


def model_recorded(artifact_dir: str) -> bool | None:
    """Whether a model row names ``artifact_dir`` (unique per training attempt and per import), looked up in a fresh
    session: after a failed insert, the files may go only when this is False (the commit may have landed though its
    answer was lost). None when the database cannot say: keep the files, the reconciler's sweep decides later."""
    try:
        with db.session() as session:
            return session.scalar(select(TrainedModel.id).where(TrainedModel.artifact_dir == artifact_dir)) is not None
    except Exception:  # noqa: BLE001 - unknown is an answer here
        log.warning("could not check whether a model row names %s", artifact_dir, exc_info=True)
        return None


# ---------------------------------------------------------------- references: "name", "name:3" or an id

NAME_MAX = 200  # characters of a model name (TrainedModel.name)
VERSION_MAX = 2**31 - 1  # versions are INTEGER columns
# the longest reference text: a name, a colon and a version
REF_MAX = NAME_MAX + 1 + len(str(VERSION_MAX))
_VERSION = re.compile(r"[0-9]+")  # ASCII digits only: int() would also take other scripts' digits


class ModelRefError(ValueError):
    """A model reference that is not ``NAME`` or ``NAME:VERSION``."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``"name"`` (the latest live version) or ``"name:3"`` reference."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_model_ref(text: str) -> ModelRef:
    """``"name"`` or ``"name:3"`` as a :class:`ModelRef`; :class:`ModelRefError` says what is wrong otherwise.

    The version follows the *last* colon, so a name holding colons is referenced as ``"a:b:2"``; ``"a:b"`` alone is
    refused (``b`` is not a version), never silently read as the name ``"a:b"``.
    """
    if not isinstance(text, str):
        raise ModelRefError("a model reference is a string: NAME or NAME:VERSION")
    if "\x00" in text:
        raise ModelRefError("must not contain a NUL character")
    name, colon, version = text.rpartition(":")
    if not colon:
        name, version = text, None
    elif not _VERSION.fullmatch(version):
        raise ModelRefError(f"the version after the last ':' must be a whole number, got {version!r} "
                            "(give NAME or NAME:VERSION, e.g. sentiment:2)")
    if not name.strip():
        raise ModelRefError("the model name is empty (give NAME or NAME:VERSION)")
    if name != name.strip():
        raise ModelRefError("the model name must not start or end with whitespace")
    if len(name) > NAME_MAX:
        raise ModelRefError(f"the model name has {len(name)} characters; names have at most {NAME_MAX}")
    if version is None:
        return ModelRef(name)
    number = int(version) if len(version) <= len(str(VERSION_MAX)) else VERSION_MAX + 1
    if not 1 <= number <= VERSION_MAX:
        raise ModelRefError(f"the version must be between 1 and {VERSION_MAX}, got {version}")
    return ModelRef(name, number)


class ModelUnavailable(Exception):
    """A model that cannot be used: missing for the caller (``code`` ``not_found``) or deleted (``model_deleted``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _missing(what: str) -> ModelUnavailable:
    return ModelUnavailable("not_found", f"{what} does not exist")


def _deleted(model: TrainedModel) -> ModelUnavailable:
    return ModelUnavailable(
        "model_deleted", f"model {model.id} ({model.name}:{model.version}) was deleted: it can no longer be used")


def lock_model(session: Session, model: TrainedModel, *, shared: bool = False) -> TrainedModel:
    """Lock ``model``'s row until the transaction ends and re-read its ``deleted_at``, so a job submission and a
    delete of the same model are serialised: whichever comes second sees what the first committed.

    PostgreSQL: ``SELECT ... FOR UPDATE`` (``shared``: ``FOR KEY SHARE``, which submissions take: they wait for a
    delete, never for each other, and it is the lock the job row's foreign key takes anyway). SQLite has no row
    locks: a no-op UPDATE takes the database's write lock at once instead (held to the commit), so the reads that
    follow are current and no other writer slips between.
    """
    connection = session.connection()  # Core statements built once: a /predict call runs them each time
    if connection.dialect.name == "sqlite":
        connection.execute(_TAKE_WRITE_LOCK, {"model_id": model.id})
    deleted_at = connection.execute(_LOCKED_DELETED_AT[shared], {"model_id": model.id}).scalar()
    set_committed_value(model, "deleted_at", deleted_at)  # the locked value, without reloading the row's JSON
    return model


_MODELS = TrainedModel.__table__
_TAKE_WRITE_LOCK = update(_MODELS).where(_MODELS.c.id == bindparam("model_id")).values(id=_MODELS.c.id)
_LOCKED_DELETED_AT = {shared: select(_MODELS.c.deleted_at).where(_MODELS.c.id == bindparam("model_id"))
                      .with_for_update(read=shared, key_share=shared) for shared in (False, True)}
# models without their metrics (a training's curves, not needed to queue a job: loaded only if read); by id, as a
# viewer may see them (an admin's: any), built once per kind of viewer: a /predict call looks its model up each time
_MODEL_ROWS = select(TrainedModel).options(defer(TrainedModel.metrics))
_MODEL_BY_ID = {admin: _MODEL_ROWS.where(TrainedModel.id == bindparam("model_id"),
                                         visible_to_viewer(TrainedModel, admin))
                for admin in (False, True)}


def resolve_model(session: Session, user: Principal, *, model_id: int | None = None, ref: str | ModelRef | None = None,
                  lock: bool = False, allow_deleted: bool = False) -> TrainedModel:
    """The model ``user`` means by ``model_id`` or by reference (``"name"``: its latest live version, ``"name:3"``).

    Ids are looked up among the models ``user`` may see (``core.ownership.visible``); names among the caller's own
    models (versions count per owner, so another user's ``sentiment:3`` is not the caller's; an admin names other
    users' models by id). ``lock``: share-lock the row (:func:`lock_model`) before checking that it is not deleted.
    Raises :class:`ModelUnavailable` (``not_found``: exactly as for someone else's model; ``model_deleted``) and
    :class:`ModelRefError` for an unparsable reference.
    """
    if (model_id is None) == (ref is None):
        raise ValueError("give exactly one of model_id and ref")
    rows = _MODEL_ROWS
    if model_id is not None:
        model = session.scalar(_MODEL_BY_ID[user.is_admin], {"model_id": model_id, "viewer_id": user.id})
        if model is None:
            raise _missing(f"model {model_id}")
    else:
        parsed = ref if isinstance(ref, ModelRef) else parse_model_ref(ref)
        query = rows.where(TrainedModel.name == parsed.name, TrainedModel.owner_id == user.id,
                           visible(TrainedModel, user))
        if parsed.version is not None:
            model = session.scalar(query.where(TrainedModel.version == parsed.version))
        else:
            model = session.scalar(query.where(TrainedModel.deleted_at.is_(None))
                                   .order_by(TrainedModel.version.desc()).limit(1))
            if model is None and session.scalar(query.limit(1)) is not None and not allow_deleted:
                raise ModelUnavailable("model_deleted", f"every version of model {parsed.name!r} was deleted")
        if model is None:
            raise _missing(f"model {str(parsed)!r}")
    if lock:
        lock_model(session, model, shared=True)
    if model.deleted_at is not None and not allow_deleted:
        raise _deleted(model)
    return model


# ---------------------------------------------------------------- delete

def active_statuses() -> list[str]:
    """Every job status that is not final: a job in one of them may still load its model."""
    return [status.value for status in JobStatus if not status.terminal]


class ModelInUse(Exception):
    """The model is referenced by queued or running jobs (``job_ids``: those the caller may see; ``others``: the
    number of further jobs, of other users)."""

    def __init__(self, model: TrainedModel, job_ids: list[str], others: int) -> None:
        self.model_id, self.job_ids, self.others = model.id, job_ids, others
        listed = ", ".join(job_ids[:10]) + (f" and {len(job_ids) - 10} more" if len(job_ids) > 10 else "")
        parts = [f"job(s) {listed}"] if job_ids else []
        if others:
            parts.append(f"{others} job(s) of other users")
        super().__init__(f"model {model.id} is used by queued or running {' and '.join(parts)}: wait for them to "
                         "finish or cancel them, then delete it")


def mark_deleted(session: Session, user: Principal, model_id: int) -> TrainedModel:
    """Mark model ``model_id`` deleted, if ``user`` may change it and no queued or running job uses it.

    The row is locked first (:func:`lock_model`), as job submissions lock it, so a job cannot be queued for a model
    whose deletion commits. Raises :class:`ModelUnavailable` (``not_found``; ``model_deleted`` when already deleted)
    or :class:`ModelInUse`. The caller commits, then removes the files (``artifact_dir``).
    """
    model = session.scalar(select(TrainedModel).where(TrainedModel.id == model_id, writable(TrainedModel, user)))
    if model is None:
        raise _missing(f"model {model_id}")
    lock_model(session, model)
    if model.deleted_at is not None:
        raise ModelUnavailable("model_deleted", f"model {model_id} was already deleted")
    rows = session.execute(select(Job.id, visible(Job, user).label("visible"))
                           .where(Job.model_id == model_id, Job.status.in_(active_statuses()))
                           .order_by(Job.created_at, Job.id)).all()
    if rows:
        raise ModelInUse(model, [row.id for row in rows if row.visible], sum(1 for row in rows if not row.visible))
    model.deleted_at = utcnow()
    session.flush()
    return model
