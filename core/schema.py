"""SQLAlchemy 2.0 schema: datasets, jobs, trained models and predictions. SQL is the source of truth."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship

# Deterministic constraint names, so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USERNAME_MAX = 64
TOKEN_NAME_MAX = 100
USER_AGENT_MAX = 200  # characters of a login's User-Agent kept for the account page
ADDRESS_MAX = 64  # an IPv6 address with a zone fits (45 characters without)
LABEL_MAX = 200  # characters of a predicted label (Prediction.label)
DATASET_NAME_MAX = 200  # characters of a dataset name (Dataset.name)

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """Attach UTC to naive datetimes (SQLite returns them naive; everything stored here is UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class JobType(str, enum.Enum):
    TRAIN = "train"
    CLASSIFY = "classify"
    EVALUATE = "evaluate"  # a saved model scored on a labelled dataset (metrics only, no prediction rows)


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def _in(column: str, enum_cls: type[enum.Enum]) -> str:
    return f"{column} IN ({', '.join(repr(m.value) for m in enum_cls)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict: JSON, list: JSON}


class User(Base):
    """An account. Web pages log in with the password; the API takes one of the user's :class:`ApiToken`."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))  # None: API tokens only, no web login
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column()  # a disabled user's tokens and logins stop working

    @property
    def active(self) -> bool:
        return self.disabled_at is None


class UserCounter(Base):
    """What a user holds that is counted as it changes, so the quota check reads one row instead of every job the
    user ever ran (each ``/predict`` call is a job). A row of its own, not a column of ``users``: workers write it
    with every batch of predictions, and a submission's quota check locks the ``users`` row (core.quotas), so the
    two never wait on each other; a user without a row holds nothing."""

    __tablename__ = "user_counters"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
                                         autoincrement=False)
    # the sum of the user's jobs' predictions_stored, kept with it (core.results, core.jobs.delete_finished)
    predictions_stored: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ApiToken(Base):
    """A named, revocable API token. Only its SHA-256 is stored: the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(TOKEN_NAME_MAX))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship(lazy="joined")


class LoginSession(Base):
    """One web login (a browser's session): its cookie carries a random id, of which only the SHA-256 is stored.

    Logout revokes this row only; "log out everywhere", a password change and a disable revoke all of the user's.
    A login also ends SESSION_LIFETIME_HOURS after ``created_at``; expired and revoked rows are deleted at the
    user's next login.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # the cookie's lookup: one unique index
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX))
    address: Mapped[str | None] = mapped_column(String(ADDRESS_MAX))


class Dataset(Base):
    """An uploaded CSV. The bytes live in SQL too, so web and workers need no shared disk for data."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # the creator (None: created before accounts existed, or its user row was deleted: admins only)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # readable by every user (the bundled samples ``make run`` loads); only ever set by the platform itself
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    name: Mapped[str] = mapped_column(String(DATASET_NAME_MAX))
    filename: Mapped[str] = mapped_column(String(255))
    columns: Mapped[list] = mapped_column(JSON)
    row_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # csv | tsv | jsonl (see core.datasets): how ``content`` is parsed
    format: Mapped[str] = mapped_column(String(16), default="csv", server_default="csv")
    # preview rows + per-column statistics, computed once while the upload is parsed (None for old rows)
    profile: Mapped[dict | None] = mapped_column(JSON)
    content: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set when the dataset is deleted (core.dataset_store): its content and profile are emptied, the row stays for
    # the jobs and models that name it; a deleted dataset is invisible (core.ownership) and counts for no quota
    deleted_at: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """A training, classification or evaluation job; the only row that changes state while work runs."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("type", JobType), name="type"),
        CheckConstraint(_in("status", JobStatus), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_type_created", "type", "created_at"),
        # the per-user quota counts a user's queued + running jobs on every submission
        Index("ix_jobs_owner_status", "owner_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))  # ix_jobs_owner_status
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    # A classify job's texts: kept out of ``params`` and deferred, so listing and polling jobs never load them.
    inputs: Mapped[list | None] = deferred(mapped_column(JSON))
    metrics: Mapped[dict | None] = mapped_column(JSON)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    # classify/evaluate: the model used; train: the model produced (set on success)
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("trained_models.id", ondelete="SET NULL", use_alter=True), index=True
    )
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    # when the running attempt expects to finish, as its work last estimated (training reports one); None: unknown
    eta_at: Mapped[datetime | None] = mapped_column()
    enqueued_at: Mapped[datetime | None] = mapped_column()  # when its message was last sent
    sends: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # messages sent (reconciler backoff)
    # prediction rows this job has stored, kept by core.results in the transaction of each insert (with its owner's
    # user_counters.predictions_stored, which the prediction quota reads)
    predictions_stored: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # a training attempt's kernel OOM-kill count at claim ({"host", "counter", "oom_kills"}, worker.oom): compared
    # when the job is claimed again after its worker was lost
    oom_watch: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    dataset: Mapped[Dataset | None] = relationship(lazy="joined")

    @property
    def status_enum(self) -> JobStatus:
        return JobStatus(self.status)


class TrainedModel(Base):
    """A trained classifier: metadata in SQL, weights in the model store (``artifact_dir``)."""

    __tablename__ = "trained_models"
    # versions count per owner and name: one user's numbering reveals nothing of another's models
    __table_args__ = (UniqueConstraint("owner_id", "name", "version", name="owner_name_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(32))
    encoder: Mapped[str] = mapped_column(String(500))
    labels: Mapped[list] = mapped_column(JSON)  # labels of the first (or only) task
    tasks: Mapped[dict] = mapped_column(JSON)  # {task: [labels]}; one entry for single-task families
    metrics: Mapped[dict | None] = mapped_column(JSON)
    params: Mapped[dict | None] = mapped_column(JSON)
    artifact_dir: Mapped[str] = mapped_column(String(1000))
    # bytes of its files in the model store (storage quotas, core.quotas); None: published before sizes were kept
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # serving defaults a request may override: {"quantize": bool} (see core.specs.ModelServingUpdate)
    serving: Mapped[dict | None] = mapped_column(JSON)
    training_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    # how the model came to be: "trained" here, or "imported" (an existing Hugging Face checkpoint)
    source: Mapped[str] = mapped_column(String(16), default="trained", server_default="trained")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set when the model is deleted: its files are gone, its row (and its jobs' predictions) stay readable
    deleted_at: Mapped[datetime | None] = mapped_column()
    # set by the reconciler's sweep when a live model's files are gone from the model store (cleared if they return)
    files_missing_at: Mapped[datetime | None] = mapped_column()

    @property
    def is_multitask(self) -> bool:
        return self.family == "multitask"


ARTIFACT_KEY_MAX = 200  # characters of a stored model's key (ModelFile.artifact_key)


class ModelFile(Base):
    """One file of a model kept in the SQL model store (``MODEL_STORE=sql``, ``core.artifacts``): its bytes are the
    :class:`ModelFileChunk` rows. ``artifact_key`` is unique per training attempt and per import; the model row's
    ``artifact_dir`` names it as ``sql:<artifact_key>``."""

    __tablename__ = "model_files"
    __table_args__ = (UniqueConstraint("artifact_key", "name", name="artifact_file"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    artifact_key: Mapped[str] = mapped_column(String(ARTIFACT_KEY_MAX))
    name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # checked after every download into a host's cache
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelFileChunk(Base):
    """A piece of a :class:`ModelFile` (a few MiB: read and written one at a time, so no file is ever whole in
    memory), in ``seq`` order."""

    __tablename__ = "model_file_chunks"

    file_id: Mapped[int] = mapped_column(ForeignKey("model_files.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Prediction(Base):
    """One classified text of a classify job; unique per (job, index) so retries never duplicate rows."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("job_id", "index", name="job_index"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    text_pair: Mapped[str | None] = mapped_column(Text)  # pair models: the second text of the pair
    row_id: Mapped[str | None] = mapped_column(Text)  # dataset jobs with an id_column: that row's id
    label: Mapped[str] = mapped_column(String(LABEL_MAX))  # multitask: the first task's label
    score: Mapped[float] = mapped_column(Float)
    scores: Mapped[dict] = mapped_column(JSON)
    tasks: Mapped[dict | None] = mapped_column(JSON)  # multitask: {task: {label, score, scores}}
    # multi-label models: every label over its threshold (``label``/``score`` then hold the top-scoring one)
    labels: Mapped[list | None] = mapped_column(JSON)
    # the task type's result JSON (``core.task_types``: what its ``prediction_columns`` store); NULL for rows stored
    # before it existed (migration 0012), which their task type reads from the columns above
    result: Mapped[dict | None] = mapped_column(JSON)
