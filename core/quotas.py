"""Per-user storage quotas: how many datasets, models and stored predictions one user holds, and how many bytes.

One user must not fill the disk that SQLite, training saves and everyone's uploads share. Usage is counted in SQL
(the single source of truth: a few COUNT/SUM queries, no files walked), and checked in one place, :func:`check`,
before anything is stored or queued: a dataset upload, a model import, a training job (it will publish a model) and
a classification job (it will store one prediction per input). Deleted models and datasets count for nothing, and
deleting a finished job deletes its predictions, so deleting frees quota. A limit of 0 means no limit; admins are
exempt while ``QUOTA_EXEMPT_ADMINS`` is true.

Refusals are :class:`QuotaExceeded`: 413 when bytes would pass a limit, 429 when a count would, both with the code
``quota_exceeded`` and the numbers (``quota``: which limit, ``usage``, ``limit``, ``requested``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from .accounts import Principal
from .config import Settings
from .schema import Dataset, Job, JobStatus, JobType, TrainedModel, User, UserCounter

_MB = 1024 * 1024
_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass(frozen=True)
class Usage:
    """What one user holds. ``models`` counts live models plus trainings still queued or running (each will
    publish one); ``predictions`` counts stored rows (``user_counters.predictions_stored``) plus the inputs of
    classify jobs still queued or running."""

    datasets: int = 0
    dataset_bytes: int = 0
    models: int = 0
    model_bytes: int = 0
    predictions: int = 0


# quota name -> (the Settings field of its limit, that field's unit in bytes or 1 for a count, HTTP status)
QUOTAS = {
    "datasets": ("max_datasets_per_user", 1, 429),
    "dataset_bytes": ("max_dataset_mb_per_user", _MB, 413),
    "models": ("max_models_per_user", 1, 429),
    "model_bytes": ("max_model_mb_per_user", _MB, 413),
    "predictions": ("max_predictions_per_user", 1, 429),
}


class QuotaExceeded(Exception):
    """A request that would take ``quota`` past its limit; ``status`` is 413 (bytes) or 429 (counts)."""

    code = "quota_exceeded"

    def __init__(self, quota: str, usage: int, limit: int, requested: int) -> None:
        self.quota, self.usage, self.limit, self.requested = quota, usage, limit, requested
        self.status = QUOTAS[quota][2]
        what = quota.replace("_", " ")
        super().__init__(
            f"storage quota exceeded: you hold {usage:,} {what} of at most {limit:,}"
            f"{f' and this needs {requested:,} more' if requested else ''}; delete some to free space"
        )

    @property
    def message(self) -> str:
        return str(self)

    def extra(self) -> dict:
        return {"quota": self.quota, "usage": self.usage, "limit": self.limit, "requested": self.requested}


def limits(settings: Settings) -> dict[str, int]:
    """Every quota's limit in its unit (bytes or a count); 0: no limit."""
    return {quota: getattr(settings, field) * unit for quota, (field, unit, _) in QUOTAS.items()}


def exempt(settings: Settings, user: Principal) -> bool:
    return bool(user.is_admin and settings.quota_exempt_admins)


def usage(session: Session, user_id: int, only: Iterable[str] | None = None) -> Usage:
    """The current :class:`Usage` of ``user_id``; ``only``: just those quotas are read (the others read 0), so that
    a classification's check (``predictions``) reads two small queries, not the dataset and model sums."""
    wanted = set(QUOTAS if only is None else only)
    held: dict[str, int] = {}
    if wanted & {"datasets", "dataset_bytes"}:
        held["datasets"], held["dataset_bytes"] = session.execute(
            select(func.count(), func.coalesce(func.sum(Dataset.size_bytes), 0))
            .where(Dataset.owner_id == user_id, Dataset.deleted_at.is_(None))
        ).one()
    if wanted & {"models", "model_bytes"}:
        models, held["model_bytes"] = session.execute(
            select(func.count(), func.coalesce(func.sum(TrainedModel.size_bytes), 0))
            .where(TrainedModel.owner_id == user_id, TrainedModel.deleted_at.is_(None))
        ).one()
        held["models"] = models + session.scalar(select(func.count()).select_from(Job).where(
            Job.owner_id == user_id, Job.type == JobType.TRAIN.value, Job.status.in_(_ACTIVE)))
    if "predictions" in wanted:
        connection = session.connection()
        stored = connection.execute(_PREDICTIONS_STORED, {"user_id": user_id}).scalar()
        # at most MAX_ACTIVE_JOBS_PER_USER rows; a running job's stored rows are counted twice, a bounded overcount
        pending = sum(_inputs(params or {}) for params in connection.execute(_ACTIVE_CLASSIFY_PARAMS,
                                                                             {"user_id": user_id}).scalars())
        held["predictions"] = int(stored or 0) + pending
    return Usage(**{quota: int(value) for quota, value in held.items()})  # PostgreSQL sums BIGINT as NUMERIC


# kept with each insert (core.results): one row read, not every job the user ran (each /predict call is one)
_PREDICTIONS_STORED = select(UserCounter.__table__.c.predictions_stored).where(
    UserCounter.__table__.c.user_id == bindparam("user_id"))
_ACTIVE_CLASSIFY_PARAMS = select(Job.__table__.c.params).where(
    Job.__table__.c.owner_id == bindparam("user_id"), Job.__table__.c.type == JobType.CLASSIFY.value,
    Job.__table__.c.status.in_(_ACTIVE))


def active_jobs(session: Session, user_id: int) -> int:
    """The user's queued + running jobs of every type (what ``MAX_ACTIVE_JOBS_PER_USER`` limits): one count,
    built once (every submission, each ``/predict`` call included, makes it)."""
    return int(session.connection().execute(_ACTIVE_JOBS, {"user_id": user_id}).scalar() or 0)


_ACTIVE_JOBS = select(func.count()).select_from(Job.__table__).where(
    Job.__table__.c.owner_id == bindparam("user_id"), Job.__table__.c.status.in_(_ACTIVE))


def _inputs(params: dict) -> int:
    """How many predictions a classify job's params say it will store (``text_count``; old jobs: their texts)."""
    return int(params.get("text_count") or len(params.get("texts") or []))


def report(session: Session, settings: Settings, user: Principal) -> dict:
    """Usage against the limits, for the account page and ``GET /api/v1/account``."""
    return {"usage": asdict(usage(session, user.id)), "limits": limits(settings), "exempt": exempt(settings, user)}


def check(session: Session, settings: Settings, user: Principal, *, lock: bool = True, **requested: int) -> None:
    """Raise :class:`QuotaExceeded` if adding ``requested`` (e.g. ``datasets=1, dataset_bytes=n``) would take
    ``user`` past a limit. A quota already at its limit refuses even a request of 0 more (``model_bytes=0``: a
    training whose size is not known yet).

    ``lock``: lock the user's row first (PostgreSQL), so that one user's concurrent requests are counted one at a
    time, until the caller's transaction ends; an early check before heavy work passes False.
    """
    if exempt(settings, user):
        return
    bounds = limits(settings)
    wanted = {q: n for q, n in requested.items() if bounds[q] > 0}
    if not wanted:
        return
    if lock and session.get_bind().dialect.name != "sqlite":
        session.execute(select(User.id).where(User.id == user.id).with_for_update())
    current = asdict(usage(session, user.id, only=wanted))
    for quota, more in wanted.items():
        held, limit = current[quota], bounds[quota]
        if held + more > limit or (more == 0 and held >= limit):
            raise QuotaExceeded(quota, held, limit, more)


def directory_bytes(directory) -> int:
    """The bytes of the files under ``directory`` (a model's folder, once, when it is published or imported)."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file() and not p.is_symlink())


def recount_predictions(session: Session) -> int:
    """Set every user's ``user_counters.predictions_stored`` to the sum of their jobs' (as migration 0015 filled
    it), in one transaction (the caller commits); how many users hold predictions. For a counter that drifted
    (a process of older code wrote rows meanwhile); best run with the workers stopped."""
    session.execute(delete(UserCounter))
    sums = select(Job.owner_id, func.sum(Job.predictions_stored)).where(Job.owner_id.is_not(None)).group_by(
        Job.owner_id)
    session.execute(insert(UserCounter).from_select(["user_id", "predictions_stored"], sums))
    return session.scalar(select(func.count()).select_from(UserCounter).where(UserCounter.predictions_stored > 0))
