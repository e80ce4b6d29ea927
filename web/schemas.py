"""Pydantic models of the API's responses. They document the API (OpenAPI) and tests check real responses
against them; the request bodies are modelled in ``core.specs``, the query strings in ``web.queries``."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.schema import JobStatus, JobType
from core.specs import Family, TaskTypeName

JobStatusName = Literal[tuple(s.value for s in JobStatus)]  # type: ignore[valid-type]
JobTypeName = Literal[tuple(t.value for t in JobType)]  # type: ignore[valid-type]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. validation_error, not_found")
    message: str = Field(description="what went wrong, for people")
    details: list[dict[str, Any]] | None = Field(default=None, description="per-field errors for validation_error")
    job_id: str | None = None
    job_ids: list[str] | None = Field(
        default=None, description="model_in_use / dataset_in_use: the queued or running jobs (the caller's) that use "
        "the model or dataset")
    model_id: int | None = Field(default=None, description="job_has_model: the live model the training job produced")
    quota: str | None = Field(default=None, description="quota_exceeded: which quota (datasets, dataset_bytes, "
                              "models, model_bytes, predictions)")
    usage: int | None = Field(default=None, description="quota_exceeded: what the caller holds now")
    limit: int | None = Field(default=None, description="quota_exceeded: the limit")
    requested: int | None = Field(default=None, description="quota_exceeded: what the request would add")


class Error(_Out):
    error: ErrorBody


class Job(_Out):
    id: str
    type: JobTypeName
    task_type: TaskTypeName = Field(  # type: ignore[valid-type]
        description="the task type: a train job's request's; a classify or evaluate job's model's")
    status: JobStatusName
    progress: float = Field(ge=0, le=1)
    eta_seconds: int | None = Field(default=None, description="a running job's estimated seconds to finish")
    error: str | None
    params: dict[str, Any] = Field(description="the request; for classify jobs `texts` is replaced by `text_count`")
    metrics: dict[str, Any] | None
    model_id: int | None = Field(description="classify: the model used; train: the model produced")
    owner_id: int | None = Field(description="the creating user's id")
    created_at: str | None = Field(description="ISO-8601, UTC")
    started_at: str | None
    finished_at: str | None
    attempts: int
    dataset_id: int | None
    terminal: bool = Field(description="true once the status can no longer change")


class JobDeleted(_Out):
    id: str
    deleted: Literal[True]
    predictions_deleted: int = Field(description="stored predictions deleted with it (freed from the quota)")


class JobList(_Out):
    items: list[Job]
    total: int
    limit: int
    offset: int


class ColumnStats(_Out):
    distinct: int
    empty: int
    label_like: bool
    top_values: list[tuple[str, int]] | None = Field(description="label counts, most common first")
    distinct_capped: bool = Field(
        default=False, description="present (true) when there were more distinct values than `distinct` counts"
    )


class ListStats(_Out):
    rows: int = Field(description="rows with a list in this column (a token dataset: sentences)")
    items: int = Field(description="items in those lists (a token dataset: tokens)")
    distinct: int | None = Field(description="distinct items, or null when there are too many to count")
    top_values: list[tuple[str, int]] | None = Field(description="item counts, most common first (a tag set)")


class Dataset(_Out):
    id: int
    name: str
    rows: int
    columns: list[str] = Field(description="the column names; in a list, at most the first 50 (see columns_truncated)")
    column_count: int = Field(description="how many columns the dataset has")
    columns_truncated: bool = Field(description="true when `columns` lists only the first of them (lists)")
    filename: str
    size_bytes: int
    sha256: str
    format: Literal["csv", "tsv", "jsonl", "json", "conll"]
    owner_id: int | None = Field(description="the creating user's id (None: a bundled sample, or from before accounts)")
    shared: bool = Field(description="readable by every user (the bundled samples)")
    created_at: str | None
    deleted_at: str | None = Field(default=None, description="set only in the answer of its delete (a deleted "
                                   "dataset answers 404)")
    preview: list[dict[str, str]] | None = None
    column_stats: dict[str, ColumnStats] | None = None
    list_stats: dict[str, ListStats] | None = Field(
        default=None, description="columns of JSON arrays of strings (a token dataset's tokens and tags)")


class DatasetList(_Out):
    items: list[Dataset]
    total: int
    limit: int
    offset: int


class Model(_Out):
    id: int
    name: str
    version: int
    family: Family
    task_type: TaskTypeName = Field(description="the task type it was trained for")  # type: ignore[valid-type]
    encoder: str
    labels: list[str]
    tasks: dict[str, list[str]]
    metrics: dict[str, Any] | None
    owner_id: int | None = Field(description="the creating user's id")
    created_at: str | None
    training_job_id: str | None
    params: dict[str, Any] | None
    serving: dict[str, Any] = {}
    source: Literal["trained", "imported"] = Field(
        default="trained", description="trained here, or imported (an existing Hugging Face checkpoint)")
    deleted_at: str | None = Field(
        default=None, description="when the model was deleted (its files are gone; its jobs stay readable), or null")
    files_missing_at: str | None = Field(
        default=None, description="when the reconciler's sweep found this live model's files gone from the model "
        "store (it cannot serve until they are restored), or null")


class ModelList(_Out):
    items: list[Model]
    total: int
    limit: int
    offset: int


class TaskPrediction(_Out):
    label: str
    score: float
    scores: dict[str, float]


class Prediction(_Out):
    """Single-task models: label/score/scores; multi-label models: labels/scores; multitask models: tasks."""

    index: int
    id: str | None = Field(default=None, description="the dataset row's id (jobs on a dataset with an id_column)")
    text: str
    text_pair: str | None = Field(default=None, description="a pair model's second text")
    labels: list[str] | None = Field(default=None, description="multi-label models: every label over its threshold")
    label: str | None = None
    score: float | None = None
    scores: dict[str, float] | None = None
    tasks: dict[str, TaskPrediction] | None = None


class PredictionPage(_Out):
    items: list[Prediction]
    total: int
    offset: int
    limit: int
    job_id: str
    job_status: JobStatusName
    text_count: int


class PredictResponse(_Out):
    job_id: str
    model_id: int
    predictions: list[Prediction]


class WorkerLine(_Out):
    worker: str = Field(description="the Celery node name without its host (train-gpu0, classify, ...); /metrics "
                        "names the host too")
    queues: list[str] | None = None
    device: str | None = Field(None, description="cpu, cuda:N (once the GPU ran a job), or the DEVICE setting")
    cuda_visible_devices: str | None = Field(None, description="the GPU(s) the process sees (GPUS workers: one)")
    device_name: str | None = None
    amp: str | None = Field(None, description="precision of its forward passes on the GPU: bf16, fp16 or fp32")
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None
    max_batch_tokens: int | None = None
    max_batch_size: int | None = None
    inference_streams: int | None = Field(None, description="batches of one model it runs at once (INFERENCE_STREAMS)")


class Health(_Out):
    status: str
    checks: dict[str, str] | None = None
    workers: list[WorkerLine] | None = Field(None, description="/readyz: each live worker process (its Redis "
                                             "snapshot, at most 35 s old), its device and batch limits")
    error: ErrorBody | None = None


class User(_Out):
    id: int
    username: str
    is_admin: bool
    created_at: str | None
    disabled_at: str | None = Field(description="when an admin disabled the user: their tokens and logins stopped")


class Storage(_Out):
    datasets: int
    dataset_bytes: int
    models: int = Field(description="live models, plus trainings queued or running (each will publish one)")
    model_bytes: int
    predictions: int = Field(description="stored predictions, plus the inputs of classify jobs queued or running")


class Account(User):
    usage: Storage = Field(description="what the caller holds")
    limits: Storage = Field(description="the caller's storage quotas (bytes or counts; 0: no limit)")
    exempt: bool = Field(description="true for an admin while QUOTA_EXEMPT_ADMINS is on: no quota applies")


class NewUser(User):
    token: str = Field(description="the user's first API token: shown in this answer only (only its hash is kept)")


class UserList(_Out):
    items: list[User]
    total: int
    limit: int
    offset: int


class Token(_Out):
    id: int
    name: str
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class NewToken(Token):
    token: str = Field(description="the API token: shown in this answer only (only its hash is kept)")


class TokenList(_Out):
    items: list[Token]
    total: int
