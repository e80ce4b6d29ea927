"""Jobs list, job page (live progress and ETA; training curves, confusion matrices and per-class metrics; or
predictions filtered by label, downloads), the cancel button and, once finished, the delete button."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from core.schema import JobStatus, JobType

from .. import charts, exports, services
from ..auth import current
from ..errors import ApiError
from ..forms import CancelForm, DeleteJobForm
from . import bp
from .entities import tag_types
from .filters import page_arg

PAGE_SIZE = 50
TOKEN_CLASSIFICATION = "token-classification"
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
    if predictions is not None and info.get("task_type") == TOKEN_CLASSIFICATION and model is not None:
        labels = _entity_type_filter(model, labels)
    dataset = deleted_dataset = None
    if info["dataset_id"] is not None:
        try:
            dataset = services.get_dataset(current(), info["dataset_id"], profile=False)
        except ApiError:  # deleted since (named as such), or not the caller's to see
            deleted_dataset = services.deleted_dataset_name(current(), info["dataset_id"])
    return render_template(
        "job.html", job=info, model=model, dataset=dataset, deleted_dataset=deleted_dataset, predictions=predictions,
        page=page, label=label, labels=labels, cancel_form=CancelForm(), delete_form=DeleteJobForm(),
        view=result_view(info["metrics"]),
    )


def _entity_type_filter(model: dict, labels: list) -> list[tuple[str, int | None]]:
    """A token job's label filter: the model's entity types (its tags without their prefixes; plain tags: the
    tags), with the job's counts where it has counted them by type."""
    counts = {str(label): n for label, n in labels}
    return [(kind, counts.get(kind)) for kind in tag_types(model.get("labels") or [])]


@bp.get("/jobs/<job_id>/charts")
def job_charts(job_id: str):
    """The job page's charts and result tables as an HTML fragment: job.js swaps it in while a training runs."""
    info = services.get_job(current(), job_id)
    return render_template("_job_results.html", job=info, view=result_view(info["metrics"]))


# shown as charts and tables of their own, so left out of the generic metrics listing
_DRAWN = ("confusion_matrix", "per_class", "per_type", "per_tag")
# the per-label tables a job's metrics may hold: text classification's per class, token classification's per
# entity type (entity-level scores) or per tag (plain tag sets)
_PER_LABEL = (("per_class", "Per class"), ("per_type", "Per entity type"), ("per_tag", "Per tag"))


def result_view(metrics: dict | None) -> dict:
    """What the job page draws from a job's metrics (training or evaluation alike):

    ``curves`` (SVG line charts of ``history``), ``matrices`` (``[(title, SVG heat map)]``: the single task's, or
    one per task of a multitask model), ``per_class`` (``[(title, {label: {precision, recall, f1, support}})]``:
    per class, or a token model's per entity type / per tag)
    and ``rest`` (every other metric, for the generic listing).
    """
    metrics = metrics or {}
    tasks = {task: m for task, m in (metrics.get("tasks") or {}).items() if isinstance(m, dict)}
    # a multitask model's top-level confusion matrix repeats its first task's: draw each task once instead
    sources = [(f"task “{task}”", m) for task, m in tasks.items()] if len(tasks) > 1 else [("", metrics)]
    matrices, per_class = [], []
    for name, source in sources:
        suffix = f" · {name}" if name else ""
        svg = charts.confusion_heatmap(source.get("confusion_matrix"), title=f"Confusion matrix{suffix}")
        if svg:
            matrices.append((f"Confusion matrix{suffix}", Markup(svg)))  # noqa: S704 - built from escaped text only
        for key, title in _PER_LABEL:
            if isinstance(source.get(key), dict) and source[key]:
                per_class.append((f"{title}{suffix}", source[key]))
    curves = charts.history_charts(metrics.get("history"))
    drawn = (*_DRAWN, "history") if curves else _DRAWN  # a history without steps (older jobs) stays a table
    rest = {k: v for k, v in metrics.items() if k not in drawn}
    if tasks:
        rest["tasks"] = {task: {k: v for k, v in m.items() if k not in _DRAWN} for task, m in tasks.items()}
    return {
        "curves": [Markup(svg) for svg in curves],  # noqa: S704 - built from escaped text only
        "matrices": matrices,
        "per_class": per_class,
        "rest": rest,
    }


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """Seconds as ``1 h 05 min``, ``4 min 20 s`` or ``35 s``; a dash when unknown."""
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


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


@bp.post("/jobs/<job_id>/delete")
def job_delete(job_id: str):
    """Delete a finished job and its predictions (``services.delete_job``): back to the list, or to the job with
    the reason it was refused (still active; a training whose model exists)."""
    if not DeleteJobForm().validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    try:
        deleted = services.delete_job(current(), job_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
        return redirect(url_for(".job", job_id=job_id))
    predictions = deleted["predictions_deleted"]
    flash(f"Job deleted{f' with its {predictions} predictions' if predictions else ''}.", "ok")
    return redirect(url_for(".jobs"))


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
