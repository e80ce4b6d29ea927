"""Rows -> JSON-ready dicts. The field names here are the public API: extend, never rename."""
from __future__ import annotations

from datetime import datetime

from core import task_types
from core.schema import (
    ApiToken, Dataset, Job, JobStatus, JobType, LoginSession, Prediction, TrainedModel, User, as_utc, utcnow,
)

TEXT_PREVIEW_COUNT = 3
TEXT_PREVIEW_CHARS = 200
# Below this progress an estimate from elapsed time alone is mostly noise (model loading, tokenizing...).
ETA_MIN_PROGRESS = 0.02


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC (``...+00:00``), or None."""
    value = as_utc(value)
    return value.isoformat() if value is not None else None


def job_params(job: Job) -> dict:
    """A job's params for display: a classify job's texts are replaced by their count and the first few."""
    params = dict(job.params or {})
    if job.type == JobType.CLASSIFY.value and "texts" in params:
        texts = params.pop("texts") or []
        params["text_count"] = len(texts)
        params["texts_preview"] = [t[:TEXT_PREVIEW_CHARS] for t in texts[:TEXT_PREVIEW_COUNT]]
    return params


def eta_seconds(job: Job, now: datetime | None = None) -> int | None:
    """Seconds until a running job should finish: from the estimate its work last reported (``eta_at``), else
    extrapolated from its elapsed time and progress; None when it is not running or nothing is known yet."""
    if job.status != JobStatus.RUNNING.value:
        return None
    now = now or utcnow()
    if job.eta_at is not None:
        return max(0, round((as_utc(job.eta_at) - now).total_seconds()))
    started, progress = as_utc(job.started_at), job.progress or 0.0
    if started is None or not ETA_MIN_PROGRESS <= progress < 1.0:
        return None
    elapsed = max(0.0, (now - started).total_seconds())
    return round(elapsed * (1.0 - progress) / progress)


def job_to_dict(job: Job, task_type: str | None = None) -> dict:
    """A job; ``task_type``: its task type (a classify or evaluate job's is its model's, which the caller knows),
    else the one its params name (a train job's request), else the default."""
    return {
        "id": job.id,
        "type": job.type,
        "task_type": task_type or task_types.of_params(job.params).name,
        "status": job.status,
        "progress": job.progress,
        "eta_seconds": eta_seconds(job),
        "error": job.error,
        "params": job_params(job),
        "metrics": job.metrics,
        "model_id": job.model_id,
        "owner_id": job.owner_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempts": job.attempts,
        "dataset_id": job.dataset_id,
        "terminal": job.status_enum.terminal,
    }


# Columns a dataset shows in a list (API list, page selects): a list must not carry every column of every dataset;
# a dataset's own answer (GET /api/v1/datasets/<id>) has them all.
LIST_COLUMNS = 50


def dataset_to_dict(dataset: Dataset, *, listing: bool = False) -> dict:
    """A dataset; ``listing``: at most LIST_COLUMNS of its columns (``columns_truncated`` says when cut)."""
    columns = list(dataset.columns)
    shown = columns[:LIST_COLUMNS] if listing else columns
    return {
        "id": dataset.id,
        "name": dataset.name,
        "rows": dataset.row_count,
        "columns": shown,
        "column_count": len(columns),
        "columns_truncated": len(shown) < len(columns),
        "filename": dataset.filename,
        "size_bytes": dataset.size_bytes,
        "sha256": dataset.sha256,
        "format": dataset.format,
        "owner_id": dataset.owner_id,
        "shared": bool(dataset.shared),  # a bundled sample every user can read
        "created_at": iso(dataset.created_at),
        "deleted_at": iso(dataset.deleted_at),  # only a delete's answer has one: deleted datasets answer 404
    }


def model_to_dict(model: TrainedModel) -> dict:
    return {
        "id": model.id,
        "name": model.name,
        "version": model.version,
        "family": model.family,
        "task_type": task_types.of_params(model.params).name,  # params: the training request (imports: none)
        "encoder": model.encoder,
        "labels": list(model.labels or []),
        "tasks": model.tasks,
        "metrics": model.metrics,
        "created_at": iso(model.created_at),
        "training_job_id": model.training_job_id,
        "params": model.params,
        "serving": model.serving or {},
        "owner_id": model.owner_id,
        "source": model.source or "trained",
        "deleted_at": iso(model.deleted_at),
        # set by the reconciler's sweep when a live model's files are gone from the model store (core.model_store)
        "files_missing_at": iso(model.files_missing_at),
    }


def prediction_to_dict(prediction: Prediction, task_type: str | None = None) -> dict:
    """``{index, text, text_pair?, <the task type's fields>, id?}``: ``text_pair`` for a pair model's input, ``id``
    (the dataset row's id) when the job was classifying a dataset with an ``id_column``; the fields between are
    ``task_type``'s (its ``prediction_fields``; text classification: ``label, score, scores``, or ``labels,
    scores`` for multi-label, or ``tasks`` for multitask).
    """
    result: dict = {"index": prediction.index, "text": prediction.text}
    if prediction.text_pair is not None:
        result["text_pair"] = prediction.text_pair
    result.update(task_types.get(task_type).prediction_fields(prediction))
    if prediction.row_id is not None:
        result["id"] = prediction.row_id
    return result


def user_to_dict(user: User) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "is_admin": bool(user.is_admin),
        "created_at": iso(user.created_at),
        "disabled_at": iso(user.disabled_at),
    }


def login_to_dict(login: LoginSession) -> dict:
    """A web login as the account page shows it (never its id's hash)."""
    return {
        "id": login.id,
        "created_at": iso(login.created_at),
        "last_seen_at": iso(login.last_seen_at),
        "user_agent": login.user_agent,
        "address": login.address,
    }


def token_to_dict(token: ApiToken) -> dict:
    """A token's metadata; the secret itself is never stored, so it can only be shown when created."""
    return {
        "id": token.id,
        "name": token.name,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
    }
