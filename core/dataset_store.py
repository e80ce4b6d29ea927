"""Deleting datasets, and the row lock that keeps a job from being queued on a dataset whose deletion commits.

A delete is *soft*: ``deleted_at`` is set and the bytes (``content``) and the profile (preview rows and value counts,
which are data too) are emptied, so the space is freed and nothing of the file can be read back; the row itself
stays. Chosen over a real ``DELETE`` with the foreign keys set to NULL because:

- finished jobs and models keep naming their dataset (a job page says "deleted dataset <name>", a model card keeps
  its name and row count) without copying the name anywhere first;
- a training job names its validation dataset inside ``params`` (JSON), where no ``ON DELETE SET NULL`` reaches;
  with the row kept that id never dangles;
- nothing depends on SQLite enforcing foreign keys (a per-connection PRAGMA) or on cascades behaving alike on
  SQLite and PostgreSQL: it is one UPDATE of one row on both, under the same lock as a model's delete.

A deleted dataset is invisible to everyone (``core.ownership.visible``): 404 for reads, training, classification
and evaluation, left out of lists, selects and quotas (``core.quotas``). The space comes back as a database
frees it: PostgreSQL reuses the TOAST pages after (auto)vacuum, SQLite reuses its free pages (the file shrinks
only on ``VACUUM``).
"""
from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .accounts import Principal
from .ownership import visible
from .schema import Dataset, Job, JobStatus, JobType, utcnow

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class DatasetUnavailable(Exception):
    """A dataset that cannot be deleted by this caller: ``status`` 404 (``not_found``: missing, someone else's
    or already deleted) or 403 (``shared_dataset``: a shared sample, which only an admin may delete)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class DatasetInUse(Exception):
    """Queued or running jobs use the dataset (``job_ids``: those the caller may see; ``others``: how many more, of
    other users: a shared sample's)."""

    code = "dataset_in_use"

    def __init__(self, dataset: Dataset, job_ids: list[str], others: int) -> None:
        self.dataset_id, self.job_ids, self.others = dataset.id, job_ids, others
        listed = ", ".join(job_ids[:10]) + (f" and {len(job_ids) - 10} more" if len(job_ids) > 10 else "")
        parts = [f"job(s) {listed}"] if job_ids else []
        if others:
            parts.append(f"{others} job(s) of other users")
        super().__init__(f"dataset {dataset.id} is used by queued or running {' and '.join(parts)}: wait for them "
                         "to finish or cancel them, then delete it")


def lock_dataset(session: Session, dataset_id: int, *, shared: bool = False) -> bool:
    """Lock dataset ``dataset_id``'s row until the transaction ends; whether it is still live (exists, not deleted).

    As ``core.models_registry.lock_model``: on PostgreSQL ``FOR UPDATE`` (a delete) or, with ``shared``, ``FOR KEY
    SHARE`` (a job submission: submissions never wait for each other, only for a delete, and whichever of the two
    comes second sees what the first committed). SQLite has no row locks: a no-op UPDATE takes the database's write
    lock at once (held to the commit), so the reads that follow are current and no other writer slips between.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Dataset).where(Dataset.id == dataset_id).values(id=Dataset.id)
                        .execution_options(synchronize_session=False))
    row = session.execute(select(Dataset.deleted_at).where(Dataset.id == dataset_id)
                          .with_for_update(read=shared, key_share=shared)).first()
    return row is not None and row.deleted_at is None


def _users_of(dataset_id: int):
    """Queued or running jobs that read the dataset: as their ``dataset_id`` (training, dataset classification,
    evaluation) or as a training's ``validation_dataset_id`` (only in its params)."""
    validation = Job.params["validation_dataset_id"].as_integer() == dataset_id
    return (Job.status.in_(_ACTIVE),
            or_(Job.dataset_id == dataset_id, (Job.type == JobType.TRAIN.value) & validation))


def mark_deleted(session: Session, user: Principal, dataset_id: int) -> Dataset:
    """Delete dataset ``dataset_id`` (see the module's docstring) if ``user`` owns it (or is an admin) and no queued
    or running job uses it. A shared sample only an admin may delete.

    The row is locked first (:func:`lock_dataset`), as job submissions lock it, so a job cannot be queued on a
    dataset whose deletion commits. Raises :class:`DatasetUnavailable` or :class:`DatasetInUse`; the caller commits.
    """
    dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id, visible(Dataset, user)))
    if dataset is None:  # visible non-shared rows are the caller's own (or any, for an admin): writable
        raise DatasetUnavailable(404, "not_found", f"dataset {dataset_id} does not exist")
    if dataset.shared and not user.is_admin:
        raise DatasetUnavailable(403, "shared_dataset", f"dataset {dataset_id} is a shared sample: only an admin "
                                 "can delete it")
    if not lock_dataset(session, dataset_id):  # deleted meanwhile, by a concurrent request
        raise DatasetUnavailable(404, "not_found", f"dataset {dataset_id} does not exist")
    rows = session.execute(select(Job.id, visible(Job, user).label("visible")).where(*_users_of(dataset_id))
                           .order_by(Job.created_at, Job.id)).all()
    if rows:
        raise DatasetInUse(dataset, [row.id for row in rows if row.visible], sum(1 for row in rows if not row.visible))
    dataset.deleted_at = utcnow()
    dataset.content = b""
    dataset.profile = None
    session.flush()
    return dataset
