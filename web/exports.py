"""Exporting a classify job's predictions as CSV or JSONL, streamed from SQL in constant memory.

The columns are the job's task type's (``core.task_types``: its ``export_layout``; text classification: a label
and a score per label, ``labels`` for a multi-label model -- a list in JSONL, joined by ``|`` in the CSV -- and a
label and scores per task for a multitask one); a pair model's rows carry ``text_pair`` after ``text``.

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

from core import task_types
from core.accounts import Principal
from core.db import db
from core.ownership import visible
from core.schema import Job, JobStatus, JobType, Prediction, TrainedModel
from core.specs import PAIRS

from .errors import ApiError

EXPORT_PAGE_ROWS = 1000  # predictions per query; read at call time so tests can make pages small
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson",
           "conll": "text/plain; charset=utf-8"}  # conll: token-classification jobs only
CSV_LABEL_SEPARATOR = "|"  # a multi-label row's labels in one CSV cell

# only what the export writes: never the whole ORM row
_COLUMNS = (Prediction.index, Prediction.row_id, Prediction.text, Prediction.text_pair, Prediction.label,
            Prediction.score, Prediction.scores, Prediction.tasks, Prediction.labels, Prediction.result)
# what the first row tells the task type about the layout (the result, or the columns of a row stored before it)
_RESULT_COLUMNS = (Prediction.label, Prediction.score, Prediction.scores, Prediction.tasks, Prediction.labels,
                   Prediction.result)


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes: which job, and its task type's layout (the columns and how a row fills them)."""

    job_id: str
    layout: task_types.ExportLayout

    @property
    def columns(self) -> list[str]:
        return self.layout.columns

    def row(self, p) -> dict:
        """One prediction row (``_COLUMNS``) as a flat dict keyed by :attr:`columns`."""
        return self.layout.row(p)

    @property
    def csv_columns(self) -> list[str]:
        """The CSV header: the layout's ``csv_columns`` when its CSV lines differ from its rows (token
        classification: one line per entity), else :attr:`columns`."""
        return getattr(self.layout, "csv_columns", self.layout.columns)

    def csv_rows(self, p) -> list[dict]:
        """The CSV lines of one prediction: the layout's ``csv_rows`` when it has them, else its one row."""
        rows = getattr(self.layout, "csv_rows", None)
        return rows(p) if rows is not None else [self.layout.row(p)]


def filename(job_id: str, fmt: str) -> str:
    return f"job-{job_id}-predictions.{fmt}"


def export_response(user: Principal, job_id: str, fmt: str) -> Response:
    """The download (API and job page alike): checked first, then streamed page by page."""
    plan = plan_export(user, job_id)  # every check happens here, before the first byte is sent
    if fmt == "conll" and not hasattr(plan.layout, "conll_lines"):
        raise ApiError(400, "invalid_parameter", f"job {job_id}'s predictions have no CoNLL form: format=conll is "
                       "for token-classification jobs; use csv or jsonl")
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
            select(*_RESULT_COLUMNS).where(Prediction.job_id == job_id).order_by(Prediction.index).limit(1)
        ).first()
        model = session.get(TrainedModel, job.model_id) if job.model_id is not None else None
        params = job.params or {}
        layout = task_types.of_params(model.params if model is not None else None).export_layout(
            model_tasks=model.tasks if model is not None else None,
            model_params=(model.params if model is not None else None) or {},
            first=first, with_id=bool(params.get("id_column")),
            with_pair=bool(params.get("text_pair_column") or params.get("input_kind") == PAIRS))
        return ExportPlan(job_id=job_id, layout=layout)


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
    if fmt == "conll":
        return _conll_chunks(plan)
    return _csv_chunks(plan)


def _conll_chunks(plan: ExportPlan) -> Iterator[bytes]:
    """CoNLL: ``token<TAB>tag`` lines, a blank line after each prediction (the layout's ``conll_lines``)."""
    for page in prediction_pages(plan.job_id):
        yield "".join(line for p in page for line in plan.layout.conll_lines(p)).encode("utf-8")


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
    writer.writerow(plan.csv_columns)
    yield _drain(buffer)
    for page in prediction_pages(plan.job_id):
        for p in page:
            for line in plan.csv_rows(p):
                writer.writerow([_csv_cell(v) for v in line.values()])
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
