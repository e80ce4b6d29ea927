"""What the API and the HTML forms both do: validate, write SQL, commit, then enqueue by task name.

Functions return JSON-ready dicts (see ``web.serializers``) and raise :class:`web.errors.ApiError` for bad input,
so the JSON API returns them as they are and the pages turn the errors into form messages.
Nothing is committed when validation fails: datasets are parsed and training columns checked before any row
is added, and each function's session commits only once everything passed.
"""
from __future__ import annotations

import io
import logging
import math
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import PurePath
from types import SimpleNamespace
from typing import BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import defer

from core import jobs as job_states
from core import artifacts, dataset_store, models_registry, predict_lane, quotas, task_types
from core.accounts import Principal
from core.datasets import DatasetError, check_column_names, check_training_columns, open_rows, scan_upload
from core.db import db
from core.encoder_policy import EncoderNotAllowed, check_encoder
from core.evaluation import EvaluationError
from core.options import template_columns
from core.ownership import visible, writable
from core.queue import broadcast_model_deleted, enqueue_job
from core.schema import DATASET_NAME_MAX, Dataset, Job, JobStatus, JobType, Prediction, TrainedModel, User
from core.specs import ClassifyRequest, EvaluateRequest, ModelServingUpdate, PredictRequest, TrainRequest

from . import context
from .errors import ApiError, validation_error
from .serializers import dataset_to_dict, job_to_dict, model_to_dict, prediction_to_dict

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_SPOOL_IN_MEMORY = 1024 * 1024  # a non-seekable upload is copied to a temporary file past this size
_COPY_CHUNK = 64 * 1024


# ---------------------------------------------------------------- validation


def validate(model: type[M], data: object, *, strict: bool = False) -> M:
    """``model`` validated from ``data`` with the deployment's limits as context; errors become a 422.
    ``strict``: no coercion (an API body's ``"1"`` or ``0`` is not the number or boolean its schema asks for)."""
    limits = context.settings()
    try:
        return model.model_validate(
            data, strict=strict,
            context={"max_texts": limits.max_texts_per_job, "max_text_chars": limits.max_text_chars},
        )
    except ValidationError as exc:
        raise validation_error(exc) from None


def _dataset_error(exc: DatasetError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def check_quota(session, user: Principal, *, lock: bool = True, **requested: int) -> None:
    """``core.quotas.check`` for ``user`` under this deployment's limits: 413 (bytes) / 429 (counts)
    ``quota_exceeded`` with ``quota``, ``usage``, ``limit`` and ``requested`` beside the message."""
    try:
        quotas.check(session, context.settings(), user, lock=lock, **requested)
    except quotas.QuotaExceeded as exc:
        raise ApiError(exc.status, exc.code, exc.message, extra=exc.extra()) from None


def _not_found(kind: str, key: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {key} does not exist")


def _visible_row(session, entity, key, user: Principal, kind: str, *, write: bool = False):
    """The ``entity`` row ``key`` if ``user`` may see it (or change it, with ``write``); else a 404.

    Someone else's row answers exactly like a missing one, so ids of others are never confirmed.
    """
    scope = writable(entity, user) if write else visible(entity, user)
    row = session.scalar(select(entity).where(entity.id == key, scope))
    if row is None:
        raise _not_found(kind, key)
    return row


# ---------------------------------------------------------------- datasets


def upload_size(stream: BinaryIO, limit: int) -> tuple[BinaryIO, int]:
    """The upload (seekable) and its size from its current position, reading at most ``limit + 1`` bytes.

    Werkzeug hands uploads over as seekable files (in memory, or a temporary file past 500 kB); any other stream
    is spooled to a temporary file, stopping as soon as it is known to be too large.
    """
    if not stream.seekable():
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        left = limit + 1
        while left > 0 and (chunk := stream.read(min(left, _COPY_CHUNK))):
            spool.write(chunk)
            left -= len(chunk)
        spool.seek(0)
        stream = spool
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    return stream, size


def _clean_names(filename: str | None, name: str | None, max_chars: int = DATASET_NAME_MAX) -> tuple[str, str]:
    """The stored file name (no directories or control characters; may be empty) and the dataset name.

    A name that SQL cannot store as typed (over ``max_chars`` characters, or holding a NUL) is a 422 naming the
    field; the file name is only a label, so it is cleaned instead, and a name derived from it is cut to fit (the
    caller gave no name, so a 422 about ``name`` would blame a field they never sent).
    """
    filename = "".join(c for c in (filename or "") if c >= " " and c != "\x7f")
    filename = PurePath(filename.replace("\\", "/")).name[:255]
    given = (name or "").strip()
    name = given or PurePath(filename or "upload").stem[:max_chars].strip() or "dataset"
    problem = (f"at most {max_chars} characters" if len(name) > max_chars
               else "must not contain a NUL character" if "\x00" in name else None)
    if problem:
        raise ApiError(422, "validation_error", f"name: {problem}",
                       details=[{"field": "name", "message": problem, "type": "value_error"}])
    return filename, name


def create_dataset(user: Principal, upload: bytes | BinaryIO, filename: str | None, name: str | None = None) -> dict:
    """Validate and profile an uploaded CSV, TSV or JSON Lines file in one streaming pass, then store it.

    ``upload`` is the file (a binary stream, read from its current position, or bytes). Nothing is written unless
    every row parsed; the response is the dataset plus its profile (preview rows and column statistics).
    """
    stream = io.BytesIO(upload) if isinstance(upload, (bytes, bytearray)) else upload
    limit = context.settings().max_upload_bytes
    stream, size = upload_size(stream, limit)
    if size > limit:
        raise ApiError(413, "payload_too_large", f"the file is too large: the limit is {limit / 2**20:g} MB")
    filename, name = _clean_names(filename, name)
    with db.session() as session:  # refused before the scan when the quota is already spent
        check_quota(session, user, lock=False, datasets=1, dataset_bytes=size)
    settings = context.settings()
    start = stream.tell()
    try:
        scan = scan_upload(stream, filename or None, max_rows=settings.max_dataset_rows,
                           max_columns=settings.max_dataset_columns)
    except DatasetError as exc:
        raise _dataset_error(exc) from None
    stream.seek(start)
    content = stream.read(size)  # the bytes live in SQL (see core.schema.Dataset): read once, after validation
    with db.session() as session:
        check_quota(session, user, datasets=1, dataset_bytes=size)  # again, locked: concurrent uploads count
        dataset = Dataset(
            owner_id=user.id,
            name=name,
            filename=filename or f"upload.{scan.format}",
            columns=scan.columns,
            row_count=scan.row_count,
            size_bytes=len(content),
            sha256=scan.sha256,
            format=scan.format,
            profile=scan.profile,
            content=content,
        )
        session.add(dataset)
        session.flush()
        result = dataset_to_dict(dataset)
    result.update(scan.profile)
    return result


def list_datasets(user: Principal, *, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(Dataset).where(visible(Dataset, user)))
        rows = session.scalars(
            select(Dataset).options(defer(Dataset.profile))  # a profile holds statistics for every column
            .where(visible(Dataset, user)).order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit).offset(offset)
        )
        return [dataset_to_dict(d, listing=True) for d in rows], total


def get_dataset(user: Principal, dataset_id: int, *, profile: bool = True) -> dict:
    """A dataset with (optionally) its profile: a preview of its first rows and per-column value counts."""
    with db.session() as session:
        dataset = _visible_row(session, Dataset, dataset_id, user, "dataset")
        result = dataset_to_dict(dataset)
        if profile:
            result.update(dataset.profile if dataset.profile is not None else _store_profile(dataset))
    return result


def delete_dataset(user: Principal, dataset_id: int) -> dict:
    """Delete a dataset ``user`` owns (an admin: any; a shared sample: admins only, else 403 ``shared_dataset``):
    its content is emptied and it disappears from reads, lists and quotas (``core.dataset_store``). 409
    ``dataset_in_use`` (``job_ids``) while a queued or running job reads it; 404 when missing or already deleted.
    Finished jobs and models that used it keep its name."""
    with db.session() as session:
        try:
            dataset = dataset_store.mark_deleted(session, user, dataset_id)
        except dataset_store.DatasetUnavailable as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        except dataset_store.DatasetInUse as exc:
            raise ApiError(409, exc.code, str(exc), extra={"job_ids": exc.job_ids}) from None
        return dataset_to_dict(dataset)


def deleted_dataset_name(user: Principal, dataset_id: int) -> str | None:
    """The name of a dataset ``user`` could see before it was deleted (a job page names what its job used);
    None when it is not deleted or was never visible to ``user``."""
    with db.session() as session:
        return session.scalar(select(Dataset.name).where(
            Dataset.id == dataset_id, Dataset.deleted_at.is_not(None), visible(Dataset, user, deleted=True)))


def _lock_live_datasets(session, *dataset_ids: int | None) -> None:
    """Share-lock the rows of the datasets a job will read, right before the job row is written, and check they
    were not deleted meanwhile (404, as for any deleted dataset): a concurrent ``delete_dataset`` either sees the
    job (409 ``dataset_in_use``) or is seen here (``core.dataset_store.lock_dataset``)."""
    for dataset_id in sorted({d for d in dataset_ids if d is not None}):  # one order: no lock cycles
        if not dataset_store.lock_dataset(session, dataset_id, shared=True):
            raise ApiError(404, "not_found", f"dataset {dataset_id} was deleted while this job was being submitted")


def dataset_columns(user: Principal, listed: dict) -> list[str]:
    """Every column of ``listed`` (a dataset as :func:`list_datasets` gave it, whose columns may be cut short)."""
    if not listed.get("columns_truncated"):
        return listed["columns"]
    with db.session() as session:
        columns = session.scalar(select(Dataset.columns).where(Dataset.id == listed["id"], visible(Dataset, user)))
    return list(columns or [])


def evaluation_datasets(user: Principal, task_type: str, *, model_params: dict | None = None,
                        limit: int = 1000) -> list[dict]:
    """The datasets visible to ``user`` that can give a model of ``task_type`` (trained with ``model_params``) its
    evaluation data (``TaskType.dataset_mismatch``: token datasets for a token model, texts with spans for one
    trained on span data, datasets of texts for a text model), newest first, as :func:`list_datasets` lists them.
    Reads only each profile's ``list_stats``, not whole profiles."""
    kind = task_types.get(task_type)
    listed, _ = list_datasets(user, limit=limit)
    if not listed:
        return []
    lists: dict[int, frozenset[str]] = {}
    with db.session() as session:
        rows = session.execute(select(Dataset.id, Dataset.profile["list_stats"], Dataset.profile.is_(None))
                               .where(Dataset.id.in_([d["id"] for d in listed]))).all()
        for dataset_id, stats, unprofiled in rows:
            if unprofiled:  # stored before profiles were kept: profiled now, once
                stats = _store_profile(session.get(Dataset, dataset_id)).get("list_stats")
            lists[dataset_id] = frozenset(stats or {})
    return [d for d in listed
            if kind.dataset_mismatch(dataset_columns(user, d), lists.get(d["id"], frozenset()),
                                     model_params=model_params) is None]


def _list_columns(dataset: Dataset) -> frozenset[str]:
    """The columns of ``dataset`` whose every filled cell is a JSON array of strings (its profile's ``list_stats``;
    a dataset stored before profiles were kept is profiled now, once)."""
    profile = dataset.profile if dataset.profile is not None else _store_profile(dataset)
    return frozenset(profile.get("list_stats") or {})


def _store_profile(dataset: Dataset) -> dict:
    """Profile a dataset stored before profiles were computed at upload, once: the result is kept on the row."""
    scan = scan_upload(io.BytesIO(dataset.content), dataset.filename, fmt=dataset.format)
    dataset.profile = scan.profile
    return scan.profile


# ---------------------------------------------------------------- jobs


def _enqueue(job_id: str, job_type: str) -> None:
    """Announce a committed job. If the broker is down the row stays queued and the reconciler re-sends it."""
    try:
        enqueue_job(context.celery(), job_id, job_type)
    except Exception:  # noqa: BLE001 - the job is safe in SQL; losing the message only delays it
        log.warning("could not enqueue job %s now; the reconciler will re-send it", job_id, exc_info=True)


def _check_quota(session, user: Principal, *, lock: bool = True) -> None:
    """At most MAX_ACTIVE_JOBS_PER_USER queued + running jobs per user: 429 beyond.

    The user's row is locked so that concurrent submissions of one user are counted one at a time (PostgreSQL;
    SQLite has no row locks, and a single-host deployment's overshoot is bounded by its request threads).
    ``lock=False``: the early check a submission makes before any heavy work (reading a dataset), so a user over
    the limit is refused cheaply; the locked check right before the insert still decides.
    """
    limit = context.settings().max_active_jobs_per_user
    if lock and session.get_bind().dialect.name != "sqlite":
        session.execute(select(User.id).where(User.id == user.id).with_for_update())
    active = quotas.active_jobs(session, user.id)
    if active >= limit:
        raise ApiError(
            429, "too_many_active_jobs",
            f"you have {active} queued or running jobs, the limit is {limit}: wait for some to finish",
        )


def _check_training_work(request: TrainRequest, rows: int, sequences: int, validation_rows: int | None = None,
                         validation_sequences: int | None = None) -> None:
    """Token work bounded by MAX_TRAINING_WORK, so one request cannot hold a worker for days: epochs x sequences x
    max_length of training, plus evaluations x validation sequences x max_length (a forward pass: a third of a
    step's cost), so a huge validation set evaluated every step is bounded too. ``sequences``: what the training
    dataset's ``rows`` encode as (``TaskType.training_sequences``: a row each, a multiple-choice row's choices, a
    question's windows); ``validation_sequences`` the same of a separate validation dataset of ``validation_rows``
    (None: the split of the training data)."""
    limit = context.settings().max_training_work
    train = request.epochs * sequences * request.max_length
    if validation_rows is None:
        validation_rows = round(rows * request.validation_split)
        validation_sequences = round(sequences * request.validation_split)
    steps = request.epochs * math.ceil(max(rows - validation_rows, 1) / request.batch_size)
    evaluations = request.epochs if request.eval_steps is None else steps // request.eval_steps + 1
    evaluation = evaluations * (validation_sequences or 0) * request.max_length // 3
    work = train + evaluation
    if work > limit:
        if sequences == rows:
            what = f"epochs x rows x max_length = {request.epochs} x {rows} x {request.max_length} = {train:,}"
        else:  # a multiple-choice row's choices, a question's windows
            what = (f"epochs x sequences x max_length = {request.epochs} x {sequences} x {request.max_length} = "
                    f"{train:,} (the {rows:,} rows encode as at least {sequences:,} sequences)")
        validated = (f"{validation_rows} rows" if validation_sequences == validation_rows
                     else f"{validation_sequences:,} sequences")
        raise ApiError(
            422, "training_too_large",
            f"{what}, plus {evaluations} evaluation(s) of {validated} "
            f"({evaluation:,}), exceeds the limit of {limit:,} (MAX_TRAINING_WORK): use fewer epochs or evaluations, "
            "a shorter max_length or less data",
        )


def _check_submission_quotas(session, user: Principal, *, lock: bool = True, **storage: int) -> None:
    """The active-jobs limit, then the storage ``core.quotas`` a job would add to (``models=1`` for a training,
    ``predictions=n`` for a classification); run unlocked before heavy work and locked right before the insert."""
    _check_quota(session, user, lock=lock)
    if storage:
        check_quota(session, user, lock=lock, **storage)


def start_training(user: Principal, request: TrainRequest) -> dict:
    """Check the encoder, the dataset(s) and their columns, commit a queued train job, then enqueue it."""
    try:
        check_encoder(request.encoder, context.settings())
    except EncoderNotAllowed as exc:
        raise ApiError(422, "encoder_not_allowed", str(exc)) from None
    with db.session() as session:
        _check_submission_quotas(session, user, lock=False, models=1, model_bytes=0)  # before any row is read
        dataset = _visible_row(session, Dataset, request.dataset_id, user, "dataset")  # content stays deferred
        validation = None
        if request.validation_dataset_id is not None:
            validation = _visible_row(session, Dataset, request.validation_dataset_id, user, "validation dataset")
        kind = task_types.get(request.task_type)
        try:
            check_column_names(dataset.columns, request)  # from the stored column list: no row read yet
            if validation is not None:
                check_column_names(validation.columns, request)
            # the work before the rows are checked: a task type that counts sequences by reading the rows (a
            # question's windows) reads them without a tokenizer
            sequences = kind.training_sequences(request, dataset.columns, dataset.row_count, _lazy_rows(dataset))
            validation_sequences = None if validation is None else kind.training_sequences(
                request, validation.columns, validation.row_count, _lazy_rows(validation))
            _check_training_work(request, dataset.row_count, sequences,
                                 validation.row_count if validation is not None else None, validation_sequences)
            # one streaming pass per dataset: memory bounded by a line and the label counts, not by the rows
            counts = check_training_columns(open_rows(dataset.content, dataset.format), request)
            if validation is not None:
                known = {task: set(labels) for task, labels in counts.items()}
                check_training_columns(open_rows(validation.content, validation.format), request, known=known)
        except DatasetError as exc:
            raise _dataset_error(exc) from None
        _lock_live_datasets(session, dataset.id, request.validation_dataset_id)
        _check_submission_quotas(session, user, models=1, model_bytes=0)
        job = job_states.create_job(
            session, JobType.TRAIN, request.model_dump(mode="json"), dataset_id=dataset.id, owner_id=user.id
        )
        result = job_to_dict(job, request.task_type)
    _enqueue(result["id"], JobType.TRAIN.value)
    return result


def start_classification(user: Principal, request: ClassifyRequest | PredictRequest, *, lane: bool = False,
                         job_id: str | None = None) -> dict:
    """Commit a queued classify job (texts, pairs, or a dataset's columns) for an existing model, then enqueue it.

    ``lane`` (``/predict``, whose caller waits): a small inline job goes through the /predict lane
    (``core.predict_lane``) while a drainer is alive, else (and always without ``lane``) as a Celery message.
    ``job_id``: the new job's id, chosen by a caller that watches for the job's end before it is sent."""
    with db.session() as session:
        if request.from_dataset:  # an inline request is checked once, locked, before its insert (no heavy work first)
            _check_quota(session, user, lock=False)
        model = _usable_model(session, user, request)
        request = request.with_model_id(model.id)
        row_count = None
        own = _reads_own_columns(session, user, request, model) if request.from_dataset else None
        if own is not None:
            row_count = own.row_count
        elif request.from_dataset:
            given, request = request, _default_text_columns(request, model)
            _check_input_kind(request, model.params or {})
            dataset = _visible_row(session, Dataset, request.dataset_id, user, "dataset")
            _check_classify_columns(dataset, given, request)
            row_count = dataset.row_count
        else:
            _check_input_kind(request, model.params or {})
        params, texts = (
            request.job_params(row_count=row_count) if request.from_dataset else request.job_params()
        )
        _lock_live_model(session, model)
        _lock_live_datasets(session, request.dataset_id if request.from_dataset else None)
        _check_submission_quotas(session, user, predictions=int(params.get("text_count") or 0))
        job = job_states.create_job(
            session, JobType.CLASSIFY, params, model_id=request.model_id, dataset_id=request.dataset_id
            if request.from_dataset else None, inputs=texts, owner_id=user.id, job_id=job_id,
        )
        result = job_to_dict(job, task_types.of_params(model.params).name)
    settings = context.settings()
    if not (lane and settings.predict_lane and not request.from_dataset and not settings.celery_eager
            and predict_lane.fits(texts or [])
            and predict_lane.push(settings.redis_url, result["id"])):
        _enqueue(result["id"], JobType.CLASSIFY.value)
    return result


def _model_error(exc: models_registry.ModelUnavailable) -> ApiError:
    return ApiError(404 if exc.code == "not_found" else 409, exc.code, exc.message)


def _usable_model(session, user: Principal,
                  request: ClassifyRequest | PredictRequest | EvaluateRequest) -> TrainedModel:
    """The live model a job request names (``model_id``, or ``model``: ``NAME`` / ``NAME:VERSION``).
    404 ``not_found`` as for an unknown id; 409 ``model_deleted``."""
    try:
        return models_registry.resolve_model(session, user, model_id=request.model_id, ref=request.model)
    except models_registry.ModelUnavailable as exc:
        raise _model_error(exc) from None


def _lock_live_model(session, model: TrainedModel) -> None:
    """Lock the model's row until the job is committed and check it is still not deleted, so that a concurrent
    delete either sees the job or is seen here (``core.models_registry.lock_model``). Taken last, right before the
    job row is written: the checks before it (a dataset's labels are read through) hold no lock."""
    models_registry.lock_model(session, model, shared=True)
    if model.deleted_at is not None:
        raise ApiError(409, "model_deleted", f"model {model.id} ({model.name}:{model.version}) was deleted while "
                       "this job was being submitted")


def _reads_own_columns(session, user: Principal, request: ClassifyRequest, model: TrainedModel) -> Dataset | None:
    """The request's dataset when the model's task type checks a dataset classify request itself
    (``TaskType.check_classify_dataset``: its columns against the dataset's; 422 when they do not fit), else
    None (the text-column defaults and checks follow)."""
    kind = task_types.of_params(model.params)
    dataset = _visible_row(session, Dataset, request.dataset_id, user, "dataset")
    try:
        own = kind.check_classify_dataset(dataset.columns, request, model.params or {}, _lazy_rows(dataset))
    except DatasetError as exc:
        raise _dataset_error(exc) from None
    if not own:
        return None
    _check_input_kind(request, model.params or {})
    return dataset


def _lazy_rows(dataset: Dataset):
    """The dataset's rows, streamed -- its (deferred) content is loaded only if someone iterates them."""
    yield from open_rows(dataset.content, dataset.format)


def _check_input_kind(request: ClassifyRequest | PredictRequest, model_params: dict) -> None:
    """What the request sends fits the model's task type (``core.task_types.check_classify_request``: each task
    type's inputs and result options, e.g. pairs to a model trained on sentence pairs only); 422 otherwise."""
    try:
        task_types.check_classify_request(request, model_params)
    except task_types.RequestError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def _default_text_columns(request: ClassifyRequest, model: TrainedModel) -> ClassifyRequest:
    """Columns a dataset job leaves out are read as the model was trained (``TaskType.classify_columns``: its text
    column or ``text_template``, its pair column, ...); 422 ``missing_column`` when the model records none (an
    imported text model). The completed request is validated again (e.g. ``id_column`` must differ from the model's
    text column)."""
    try:
        update = task_types.of_params(model.params).classify_columns(request, model.id, model.params or {})
    except task_types.RequestError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    if not update:
        return request
    return validate(ClassifyRequest, {**request.model_dump(exclude_none=True), **update})


def _check_classify_columns(dataset: Dataset, request: ClassifyRequest, defaulted: ClassifyRequest) -> None:
    """The columns of ``defaulted`` (``request`` completed by :func:`_default_text_columns`; a template's columns
    too) exist, and the text has some cells to read (from the profile computed at upload)."""
    missing = [c for c in defaulted.dataset_columns() if c not in dataset.columns]
    if missing:
        from_model = [c for c in missing if c not in request.dataset_columns()]
        hint = (f" ({', '.join(map(repr, from_model))}: as the model was trained; give text_column"
                f"{' / text_pair_column' if defaulted.text_pair_column else ''} to read other columns)"
                if from_model else "")
        raise ApiError(
            422, "unknown_column",
            f"column(s) {', '.join(repr(c) for c in missing)} not in dataset {dataset.id}; "
            f"it has {', '.join(dataset.columns)}{hint}",
        )
    text_column, template = defaulted.text_column, defaulted.text_template
    used = template_columns(template) if template is not None else [text_column]
    stats = (dataset.profile or {}).get("column_stats") or {}
    if stats and all(c in stats and stats[c].get("empty", 0) >= dataset.row_count for c in used):
        what = f"column {text_column!r}" if text_column else f"the columns of text_template {template!r}"
        raise ApiError(422, "empty_column", f"{what} of dataset {dataset.id} has no text to classify")


def start_evaluation(user: Principal, request: EvaluateRequest) -> dict:
    """Commit a queued evaluate job: the model and dataset visible to ``user``, columns that fit the model's task
    shape and exist in the dataset, and no label the model does not know (422 ``unknown_labels`` with the list)."""
    with db.session() as session:
        _check_quota(session, user, lock=False)  # before the labels are read through
        model = _usable_model(session, user, request)
        dataset = _visible_row(session, Dataset, request.dataset_id, user, "dataset")
        kind = task_types.of_params(model.params)  # the job follows its model's task type
        own_columns = request.task_columns()  # columns only some task types read: the model's must be one
        unread = [name for name in own_columns if name not in kind.request_fields]
        if unread:
            raise ApiError(422, "invalid_columns", f"{' and '.join(unread)} do(es) not apply to model {model.id}, a "
                           f"{kind.name} model")
        try:
            plan = kind.plan_evaluation(
                model.family, model.tasks, model.params, text_column=request.text_column,
                text_pair_column=request.text_pair_column, label_column=request.label_column,
                label_columns=request.label_columns, dataset_columns=dataset.columns, **own_columns)
            # a token model on a dataset of texts, or the reverse: said so before any missing column is named
            mismatch = kind.dataset_mismatch(dataset.columns, _list_columns(dataset), plan.columns, model.params)
            if mismatch:
                raise ApiError(422, "dataset_task_mismatch", f"dataset {dataset.id} ({dataset.name}) cannot "
                               f"evaluate a {kind.name} model: {mismatch}")
            # a plan whose columns depend on the dataset's shape (question answering) resolves them against it
            columns = plan.columns_in(dataset.columns) if hasattr(plan, "columns_in") else plan.columns
            missing = [c for c in columns if c not in dataset.columns]
            if missing:
                raise ApiError(422, "unknown_column", f"column(s) {', '.join(map(repr, missing))} not in dataset "
                               f"{dataset.id}; it has {', '.join(dataset.columns)}")
            plan.check_labels(open_rows(dataset.content, dataset.format))  # streamed: no list of every row
        except EvaluationError as exc:
            raise ApiError(422, exc.code, exc.message, extra={"labels": exc.labels} if exc.labels else None) from None
        except DatasetError as exc:
            raise _dataset_error(exc) from None
        params = {"model_id": model.id, "dataset_id": dataset.id, **plan.to_params(), "text_count": dataset.row_count}
        if request.quantize is not None:
            params["quantize"] = request.quantize
        _lock_live_model(session, model)
        _lock_live_datasets(session, dataset.id)
        _check_quota(session, user)
        job = job_states.create_job(
            session, JobType.EVALUATE, params, model_id=model.id, dataset_id=dataset.id, owner_id=user.id)
        result = job_to_dict(job, kind.name)
    _enqueue(result["id"], JobType.EVALUATE.value)
    return result


def get_job(user: Principal, job_id: str) -> dict:
    with db.session() as session:
        return _job_dicts(session, [_visible_row(session, Job, job_id, user, "job")])[0]


def list_jobs(
    user: Principal,
    *,
    status: str | None = None,
    job_type: str | None = None,
    model_id: int | None = None,
    dataset_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """Jobs, newest first, with the total matching the filters."""
    conditions = [visible(Job, user)]
    if status:
        conditions.append(Job.status == JobStatus(status).value)
    if job_type:
        conditions.append(Job.type == JobType(job_type).value)
    if model_id is not None:
        conditions.append(Job.model_id == model_id)
    if dataset_id is not None:
        conditions.append(Job.dataset_id == dataset_id)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(Job).where(*conditions))
        rows = session.scalars(
            select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
        )
        return _job_dicts(session, list(rows)), total


def _job_dicts(session, jobs: list[Job]) -> list[dict]:
    """``job_to_dict`` of each job with its task type: a train job's request names it; a classify or evaluate job
    follows its model's (read in one query for the whole list; a job whose model row is gone: the default)."""
    model_ids = {job.model_id for job in jobs if job.type != JobType.TRAIN.value and job.model_id is not None}
    params = dict(session.execute(select(TrainedModel.id, TrainedModel.params)
                                  .where(TrainedModel.id.in_(model_ids))).all()) if model_ids else {}
    return [job_to_dict(job, task_types.of_params(job.params if job.type == JobType.TRAIN.value
                                                  else params.get(job.model_id)).name) for job in jobs]


def job_counts(user: Principal) -> dict[str, int]:
    """Number of the user's jobs per status (every status present, zero when none)."""
    counts = {s.value: 0 for s in JobStatus}
    with db.session() as session:
        query = select(Job.status, func.count()).where(visible(Job, user)).group_by(Job.status)
        for status, n in session.execute(query):
            counts[status] = n
    return counts


def cancel_job(user: Principal, job_id: str) -> dict:
    with db.session() as session:
        _visible_row(session, Job, job_id, user, "job", write=True)
        try:
            job = job_states.cancel(session, job_id)
        except LookupError:
            raise _not_found("job", job_id) from None
        except job_states.InvalidTransition as exc:
            raise ApiError(409, "invalid_transition", str(exc)) from None
        return _job_dicts(session, [job])[0]


def delete_job(user: Principal, job_id: str) -> dict:
    """Delete a finished job ``user`` may change, with its stored predictions (which frees prediction quota).
    409 ``job_active`` while it is queued or running; 409 ``job_has_model`` (``model_id``) for a training whose
    model still exists; 404 for a missing job or someone else's (``core.jobs.delete_finished``)."""
    with db.session() as session:
        _visible_row(session, Job, job_id, user, "job", write=True)
        try:
            predictions = job_states.delete_finished(session, job_id)
        except LookupError:
            raise _not_found("job", job_id) from None
        except job_states.JobNotDeletable as exc:
            raise ApiError(409, exc.code, exc.message,
                           extra={"model_id": exc.model_id} if exc.model_id is not None else None) from None
    return {"id": job_id, "deleted": True, "predictions_deleted": predictions}


def list_predictions(
    user: Principal, job_id: str, *, offset: int = 0, limit: int = 100, label: str | None = None
) -> dict:
    """A page of a classify job's predictions, ordered by index, optionally only those predicted ``label``
    (multitask: the first task's label; multi-label: one of the labels); ``total`` counts the matching rows. A train
    job has none: 409."""
    with db.session() as session:
        job = _visible_row(session, Job, job_id, user, "job")
        if job.type != JobType.CLASSIFY.value:
            raise ApiError(
                409, "not_a_classify_job", f"job {job_id} is a {job.type} job; only classify jobs have predictions"
            )
        model_params = _model_params(session, job)
        kind = task_types.of_params(model_params)  # a classify job follows its model's task type
        conditions = [Prediction.job_id == job_id]
        if label is not None:
            conditions.append(kind.label_condition(session, label, model_params))
        total = session.scalar(select(func.count()).select_from(Prediction).where(*conditions))
        rows = session.scalars(
            select(Prediction)
            .where(*conditions)
            .order_by(Prediction.index)
            .limit(limit)
            .offset(offset)
        )
        return {
            "items": [prediction_to_dict(p, kind.name) for p in rows],
            "total": total,
            "offset": offset,
            "limit": limit,
            "job_id": job_id,
            "job_status": job.status,
            "text_count": (job.params or {}).get("text_count", len((job.params or {}).get("texts") or [])),
        }


def _model_params(session, job: Job) -> dict:
    """The training params of the job's model ({} once the model row is gone)."""
    return session.scalar(select(TrainedModel.params).where(TrainedModel.id == job.model_id)) or {}


def prediction_labels(user: Principal, job_id: str) -> list[tuple[str, int | None]]:
    """``[(label, count)]`` a classify job predicted (multitask: its first task), for a filter by label.

    A finished job's ``metrics.label_counts`` has them already; a running job (or an old one without counts)
    asks SQL for the distinct labels so far, without counts.
    """
    with db.session() as session:
        job = session.scalar(select(Job).where(Job.id == job_id, visible(Job, user)))
        if job is None:
            return []
        counts = (job.metrics or {}).get("label_counts")
        if isinstance(counts, dict) and counts:
            first = next(iter(counts.values()))
            if isinstance(first, dict):  # multitask: {task: {label: n}}; Prediction.label is the first task's
                counts = first
            return [(str(label), n) for label, n in counts.items()]
        model = session.get(TrainedModel, job.model_id) if job.model_id is not None else None
        if model is not None and (model.params or {}).get("multi_label"):
            # a running multi-label job: any of the model's labels may be among a text's labels
            return [(str(label), None) for label in model.labels or []]
        labels = session.scalars(
            select(Prediction.label).where(Prediction.job_id == job_id).distinct().order_by(Prediction.label))
        return [(label, None) for label in labels]


def wait_for_job(user: Principal, job_id: str, timeout_s: float) -> dict:
    """Wait until the job finishes or time runs out; the job as it then is (see :func:`wait_for_status`)."""
    wait_for_status(job_id, timeout_s)
    return get_job(user, job_id)


# how long /predict waits on the job-done announcement alone before it also reads SQL (a lost message or a
# reconnecting listener then costs at most this much latency)
ANNOUNCEMENT_WAIT_S = 0.5


def classify_and_wait(user: Principal, request: PredictRequest, timeout_s: float) -> tuple[dict, str, list | None]:
    """``/predict``: commit and send a classify job, wait up to ``timeout_s`` for it; (the job as created, its
    status, its predictions when it succeeded else None).

    The common case reads no SQL after the commit: the call watches for the job's end *before* the job is sent
    (its id is chosen here), so no status read is needed to catch an early finish. A /predict lane worker relays
    the rows it committed with the job's success in the announcement (``core.queue.done_message``: published after
    the commit, for jobs this worker's claim won and whose every row it inserted), so they are answered as they
    would read back. Without relayed rows, an announced success is confirmed by the same query that reads the
    predictions (:func:`all_predictions` ``succeeded_only``). Anything else (no announcement within
    ``ANNOUNCEMENT_WAIT_S``, another status, no listener) falls back to :func:`wait_for_status`, which reads SQL as
    the truth.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    listener = context.completion()
    job_id = str(uuid.uuid4())
    watching = listener is not None and listener.connected.is_set() and timeout_s > 0
    with listener.watch(job_id) if watching else nullcontext(None) as announced:
        created = start_classification(user, request, lane=True, job_id=job_id)
        if announced is not None and announced.wait(min(ANNOUNCEMENT_WAIT_S, timeout_s)) \
                and announced.status == JobStatus.SUCCEEDED.value:
            if announced.rows:
                return created, JobStatus.SUCCEEDED.value, _predictions_of_rows(announced.rows,
                                                                                created["task_type"])
            predictions = all_predictions(user, job_id, created["task_type"], succeeded_only=True)
            if predictions:
                return created, JobStatus.SUCCEEDED.value, predictions
    status = wait_for_status(job_id, deadline - time.monotonic())
    if status != JobStatus.SUCCEEDED.value:
        return created, status, None
    return created, status, all_predictions(user, job_id, created["task_type"])


def wait_for_status(job_id: str, timeout_s: float) -> str:
    """Wait until the job finishes or time runs out; its status then. The caller has checked that the job is the
    user's (it created it).

    Woken by the worker's job-done announcement (``web.completion``) where there is one; the job's status is
    read from SQL after registering and on every wake-up, so a lost announcement only delays the answer.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    listener = context.completion()
    with listener.watch(job_id) if listener is not None else nullcontext(threading.Event()) as done:
        # with a live listener SQL is only a safety net, so it is read rarely; without one it is polled
        delay = 0.5 if listener is not None and listener.connected.is_set() else 0.02
        while True:
            with db.session() as session:  # the status column alone: a classify job's inputs hold every text
                status = session.scalar(select(Job.status).where(Job.id == job_id))
            if status is None:
                raise _not_found("job", job_id)
            remaining = deadline - time.monotonic()
            if JobStatus(status).terminal or remaining <= 0:
                return status
            done.wait(min(delay, remaining))
            done.clear()
            if listener is None or not listener.connected.is_set():
                delay = min(delay * 1.5, 0.5)


# what a stored prediction's answer is made of (serializers.prediction_to_dict and the task types read them)
_PREDICTION_FIELDS = tuple(column for column in Prediction.__table__.c if column.key not in ("id", "job_id"))


def all_predictions(user: Principal, job_id: str, task_type: str | None = None, *,
                    succeeded_only: bool = False) -> list[dict]:
    """Every prediction of a job ``user`` may see (none of anyone else's: the scope is part of the one query);
    ``task_type``: the job's, when the caller knows it (else read from its model); ``succeeded_only``: none unless
    SQL says the job succeeded (its predictions commit with its success, so they are then complete)."""
    with db.session() as session:
        kind = task_types.get(task_type) if task_type else task_types.of_params(session.scalar(
            select(TrainedModel.params).join(Job, Job.model_id == TrainedModel.id)
            .where(Job.id == job_id, visible(Job, user))))
        rows = session.execute(
            select(*_PREDICTION_FIELDS)  # plain columns: no ORM entity per prediction (/predict reads one per call)
            .join(Job, Job.id == Prediction.job_id)
            .where(Prediction.job_id == job_id, visible(Job, user),
                   *([Job.status == JobStatus.SUCCEEDED.value] if succeeded_only else []))
            .order_by(Prediction.index)
        )
        return _predictions_of_rows((row._mapping for row in rows), kind.name)


def _predictions_of_rows(rows: Iterable[Mapping], task_type: str) -> list[dict]:
    """Prediction rows (their stored columns: read back, or relayed by the worker that committed them) as the API
    answers them, in index order."""
    return sorted((prediction_to_dict(SimpleNamespace(**row), task_type) for row in rows),
                  key=lambda item: item["index"])


# ---------------------------------------------------------------- models


def list_models(user: Principal, *, name: str | None = None, include_deleted: bool = False, limit: int = 100,
                offset: int = 0) -> tuple[list[dict], int]:
    """Models ``user`` may see, newest first; ``name``: that name's versions, newest (highest) first. Deleted models
    are left out unless ``include_deleted``."""
    conditions = [visible(TrainedModel, user)]
    if name is not None:
        conditions.append(TrainedModel.name == name)
    if not include_deleted:
        conditions.append(TrainedModel.deleted_at.is_(None))
    order = ((TrainedModel.version.desc(), TrainedModel.id.desc()) if name is not None
             else (TrainedModel.created_at.desc(), TrainedModel.id.desc()))
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(TrainedModel).where(*conditions))
        rows = session.scalars(select(TrainedModel).where(*conditions).order_by(*order).limit(limit).offset(offset))
        return [model_to_dict(m) for m in rows], total


def update_model_serving(user: Principal, model_id: int, update: ModelServingUpdate) -> dict:
    """Set a model's serving defaults (fields left out of the request keep their value)."""
    with db.session() as session:
        model = _visible_row(session, TrainedModel, model_id, user, "model", write=True)
        serving = dict(model.serving or {})
        for key, value in update.model_dump(exclude_unset=True).items():
            if value is None:
                serving.pop(key, None)
            else:
                serving[key] = value
        model.serving = serving
        session.flush()
        return model_to_dict(model)


def get_model(user: Principal, model_id: int) -> dict:
    """A model ``user`` may see, deleted or not (``deleted_at`` says)."""
    with db.session() as session:
        return model_to_dict(_visible_row(session, TrainedModel, model_id, user, "model"))


def delete_model(user: Principal, model_id: int) -> dict:
    """Delete a model ``user`` may change: 409 ``model_in_use`` (the message and ``job_ids`` name the jobs) while a
    queued or running job uses it, 409 ``model_deleted`` when it already was; otherwise the row is marked deleted
    and committed, then its files are removed from the model store and running workers are told to drop it from
    their predictor caches and every host to drop its cached files (best effort: a worker also evicts a model whose
    directory is gone when it looks it up, and a deleted model is never served from a stale cache).

    Its jobs and their predictions stay readable.
    """
    with db.session() as session:
        try:
            model = models_registry.mark_deleted(session, user, model_id)
        except models_registry.ModelUnavailable as exc:
            raise _model_error(exc) from None
        except models_registry.ModelInUse as exc:
            raise ApiError(409, "model_in_use", str(exc), extra={"job_ids": exc.job_ids}) from None
        result, artifact_dir = model_to_dict(model), model.artifact_dir
    _remove_model_files(artifact_dir)
    try:
        broadcast_model_deleted(context.celery(), artifact_dir)
    except Exception:  # noqa: BLE001 - the delete is committed; workers evict a vanished model on their own
        log.warning("could not tell the workers that model %s was deleted", model_id, exc_info=True)
    return result


def _remove_model_files(artifact_dir: str) -> None:
    """Remove a deleted model's files from the model store and this host's cache (``core.artifacts.discard``: a
    directory only inside MODEL_STORE). A failure is logged, not raised: the row is already marked deleted."""
    artifacts.discard(context.settings(), artifact_dir)
