"""Exporting a classify job's predictions as CSV or JSONL, streamed from SQL in constant memory.

A multi-label model's rows carry ``labels`` (a list in JSONL; joined by ``|`` in the CSV) and a score per label;
a pair model's rows carry ``text_pair`` after ``text``.

:func:`plan_export` runs every check before the response starts (a failure is a normal JSON error, never a
half-written 200); :func:`export_chunks` then reads the predictions page by page, keyset-paginated on
``Prediction.index``, each page in its own short session, and yields encoded chunks.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Response
from sqlalchemy import select

from core.accounts import Principal
from core.db import db
from core.ownership import visible
from core.schema import Job, JobStatus, JobType, Prediction, TrainedModel
from core.specs import PAIRS

from .errors import ApiError

EXPORT_PAGE_ROWS = 1000  # predictions per query; read at call time so tests can make pages small
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
CSV_LABEL_SEPARATOR = "|"  # a multi-label row's labels in one CSV cell

# only what the export writes: never the whole ORM row
_COLUMNS = (Prediction.index, Prediction.row_id, Prediction.text, Prediction.text_pair, Prediction.label,
            Prediction.score, Prediction.scores, Prediction.tasks, Prediction.labels)


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes: which job, whether it has ``id`` and ``text_pair`` columns, the task shape and the
    labels of each task."""

    job_id: str
    with_id: bool
    multitask: bool
    tasks: dict[str, list[str]]  # {task: labels} in the model's order; single-task: exactly one entry
    multi_label: bool = False
    with_pair: bool = False

    @property
    def columns(self) -> list[str]:
        """Column names in order: ``index``, ``id``?, ``text``, ``text_pair``?, then the label/score columns."""
        columns = ["index", *(["id"] if self.with_id else []), "text", *(["text_pair"] if self.with_pair else [])]
        if self.multi_label:
            columns += ["labels", *(f"score_{label}" for label in self._single_labels)]
        elif self.multitask:
            for task, labels in self.tasks.items():
                columns += [f"{task}_label", f"{task}_score", *(f"{task}_score_{label}" for label in labels)]
        else:
            columns += ["label", "score", *(f"score_{label}" for label in self._single_labels)]
        return columns

    @property
    def _single_labels(self) -> list[str]:
        return next(iter(self.tasks.values()), [])

    def row(self, p) -> dict:
        """One prediction row (``_COLUMNS``) as a flat dict keyed by :attr:`columns`."""
        row: dict = {"index": p.index}
        if self.with_id:
            row["id"] = p.row_id
        row["text"] = p.text
        if self.with_pair:
            row["text_pair"] = p.text_pair
        if self.multi_label:
            scores = p.scores or {}
            row["labels"] = list(p.labels or [])
            row.update((f"score_{label}", scores.get(label)) for label in self._single_labels)
        elif self.multitask:
            for task, labels in self.tasks.items():
                result = (p.tasks or {}).get(task) or {}
                scores = result.get("scores") or {}
                row[f"{task}_label"] = result.get("label")
                row[f"{task}_score"] = result.get("score")
                row.update((f"{task}_score_{label}", scores.get(label)) for label in labels)
        else:
            scores = p.scores or {}
            row["label"], row["score"] = p.label, p.score
            row.update((f"score_{label}", scores.get(label)) for label in self._single_labels)
        return row


def filename(job_id: str, fmt: str) -> str:
    return f"job-{job_id}-predictions.{fmt}"


def export_response(user: Principal, job_id: str, fmt: str) -> Response:
    """The download (API and job page alike): checked first, then streamed page by page."""
    plan = plan_export(user, job_id)  # every check happens here, before the first byte is sent
    return Response(
        export_chunks(plan, fmt),
        content_type=FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename(job_id, fmt)}"'},
    )


def plan_export(user: Principal, job_id: str) -> ExportPlan:
    """Check that ``job_id`` is a succeeded classify job and work out its columns; raises :class:`ApiError`."""
    with db.session() as session:
        job = session.scalar(select(Job).where(Job.id == job_id, visible(Job, user)))
        if job is None:  # someone else's job answers like a missing one
            raise ApiError(404, "not_found", f"job {job_id} does not exist")
        if job.type != JobType.CLASSIFY.value:
            raise ApiError(
                409, "not_a_classify_job", f"job {job_id} is a {job.type} job; only classify jobs have predictions"
            )
        if job.status != JobStatus.SUCCEEDED.value:
            raise ApiError(
                409, "job_not_succeeded",
                f"job {job_id} is {job.status}; its predictions can be exported once it has succeeded",
            )
        first = session.execute(
            select(Prediction.scores, Prediction.tasks, Prediction.labels)
            .where(Prediction.job_id == job_id)
            .order_by(Prediction.index)
            .limit(1)
        ).first()
        model = session.get(TrainedModel, job.model_id) if job.model_id is not None else None
        multitask, tasks = _label_layout(model, first)
        model_params = (model.params if model is not None else None) or {}
        multi_label = first.labels is not None if first is not None else bool(model_params.get("multi_label"))
        params = job.params or {}
        with_pair = bool(params.get("text_pair_column") or params.get("input_kind") == PAIRS)
        return ExportPlan(job_id=job_id, with_id=bool(params.get("id_column")), multitask=multitask,
                          tasks=tasks, multi_label=multi_label, with_pair=with_pair)


def _label_layout(model: TrainedModel | None, first) -> tuple[bool, dict[str, list[str]]]:
    """(multitask?, {task: labels}): labels from the model row, else (model deleted) from the first prediction."""
    if first is not None:
        multitask = first.tasks is not None  # the rows decide: they are what gets written
    else:
        multitask = model is not None and len(model.tasks or {}) > 1
    if model is not None and model.tasks:
        tasks = {task: list(labels) for task, labels in model.tasks.items()}
        return multitask, tasks if multitask else dict([next(iter(tasks.items()))])
    if first is None:
        return multitask, {}
    if multitask:
        return True, {task: list(result.get("scores") or {}) for task, result in first.tasks.items()}
    return False, {"label": list(first.scores or {})}


def prediction_pages(job_id: str) -> Iterator[list]:
    """The job's predictions in index order, one page (list of rows) at a time.

    Keyset pagination (``index > last``) rides the (job_id, index) unique index, so every page costs the same;
    each page has its own session, closed before the page is handed on, so no connection is held while the
    client reads.
    """
    page_rows = EXPORT_PAGE_ROWS
    last: int | None = None
    while True:
        query = select(*_COLUMNS).where(Prediction.job_id == job_id)
        if last is not None:
            query = query.where(Prediction.index > last)
        with db.session() as session:
            rows = session.execute(query.order_by(Prediction.index).limit(page_rows)).all()
        if not rows:
            return
        yield rows
        if len(rows) < page_rows:
            return
        last = rows[-1].index


def export_chunks(plan: ExportPlan, fmt: str) -> Iterator[bytes]:
    """The encoded export of ``plan`` in ``fmt`` (``csv`` or ``jsonl``), one chunk per page of predictions."""
    if fmt == "jsonl":
        return _jsonl_chunks(plan)
    return _csv_chunks(plan)


def _csv_cell(value):
    # repr: the shortest string that parses back to the same float (csv would write str(), the same today,
    # but the exact round trip is the contract, so say so)
    if isinstance(value, list):  # a multi-label row's labels
        return CSV_LABEL_SEPARATOR.join(value)
    return repr(value) if isinstance(value, float) else value


def _csv_chunks(plan: ExportPlan) -> Iterator[bytes]:
    buffer = io.StringIO()
    # RFC 4180: CRLF rows, fields quoted only when needed (any CR or LF in a text gets the field quoted)
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")  # BOM: spreadsheets otherwise guess a legacy encoding for UTF-8 CSV
    writer.writerow(plan.columns)
    yield _drain(buffer)
    for page in prediction_pages(plan.job_id):
        for p in page:
            writer.writerow([_csv_cell(v) for v in plan.row(p).values()])
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return data.encode("utf-8")


def _jsonl_chunks(plan: ExportPlan) -> Iterator[bytes]:
    for page in prediction_pages(plan.job_id):
        lines = [json.dumps(plan.row(p), ensure_ascii=False) + "\n" for p in page]
        yield "".join(lines).encode("utf-8")
