"""Jobs list, job page (live progress, metrics or predictions filtered by label, downloads) and the cancel button."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from core.schema import JobStatus, JobType

from .. import exports, services
from ..auth import current
from ..errors import ApiError
from ..forms import CancelForm
from . import bp
from .filters import page_arg

PAGE_SIZE = 50
PREDICTIONS_PAGE_SIZE = 100


@bp.get("/jobs")
def jobs():
    status = request.args.get("status") or None
    job_type = request.args.get("type") or None
    if status not in (None, *[s.value for s in JobStatus]) or job_type not in (None, *[t.value for t in JobType]):
        abort(400, "unknown status or type filter")
    page = page_arg()
    items, total = services.list_jobs(current(), status=status, job_type=job_type, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render_template(
        "jobs.html",
        jobs=items,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        status=status,
        job_type=job_type,
        statuses=[s.value for s in JobStatus],
        types=[t.value for t in JobType],
    )


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    info = services.get_job(current(), job_id)
    page = page_arg()
    predictions = None
    label = request.args.get("label") or None
    labels: list = []
    if info["type"] == JobType.CLASSIFY.value:
        predictions = services.list_predictions(current(), 
            job_id, offset=(page - 1) * PREDICTIONS_PAGE_SIZE, limit=PREDICTIONS_PAGE_SIZE, label=label
        )
        predictions["pages"] = max(1, -(-predictions["total"] // PREDICTIONS_PAGE_SIZE))
        labels = services.prediction_labels(current(), job_id)
    model = None
    if info["model_id"] is not None:
        try:
            model = services.get_model(current(), info["model_id"])
        except ApiError:
            model = None
    dataset = None
    if info["dataset_id"] is not None:
        try:
            dataset = services.get_dataset(current(), info["dataset_id"], profile=False)
        except ApiError:
            dataset = None
    return render_template(
        "job.html", job=info, model=model, dataset=dataset, predictions=predictions, page=page, label=label,
        labels=labels, cancel_form=CancelForm(),
    )


@bp.get("/jobs/<job_id>.json")
def job_json(job_id: str):
    """The job as the API returns it, for the job page's live progress (pages use the login, not a token)."""
    return services.get_job(current(), job_id)


@bp.get("/jobs/<job_id>/export")
def export(job_id: str):
    """The job page's download buttons: the API's export, authenticated by the login."""
    fmt = request.args.get("format") or "csv"
    if fmt not in exports.FORMATS:
        abort(400, f"format must be one of {', '.join(exports.FORMATS)}")
    return exports.export_response(current(), job_id, fmt)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    form = CancelForm()
    if not form.validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    try:
        services.cancel_job(current(), job_id)
        flash("Job cancelled.", "ok")
    except ApiError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
    return redirect(url_for(".job", job_id=job_id))
