"""Models: list and detail (evaluate, download, delete)."""
from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for

from core.specs import EvaluateRequest
from core.task_types.token_classification import reads_spans

from .. import model_files, services
from ..auth import current
from ..errors import ApiError
from ..forms import TOKEN_CLASSIFICATION, DeleteModelForm, EvaluateForm, choices
from . import bp
from .forms_support import apply_error


@bp.get("/models")
def models():
    """The caller's live models (deleted ones are left out), newest first."""
    items, total = services.list_models(current(), limit=500)
    return render_template("models.html", models=items, total=total)


@bp.route("/models/<int:model_id>", methods=["GET", "POST"])
def model(model_id: int):
    """A model's facts and metrics, its recent jobs, a form to evaluate it on a labelled dataset of its task type, a
    download link and a delete button; a deleted model's page says so and offers no actions."""
    info = services.get_model(current(), model_id)
    # only the datasets that fit the model's task type: token datasets for a token model, texts for the others
    datasets = services.evaluation_datasets(current(), info["task_type"], model_params=info["params"])
    form = EvaluateForm()
    if info["task_type"] == TOKEN_CLASSIFICATION:
        form.for_token_model(spans=reads_spans(info["params"] or {}))
    form.dataset_id.choices = choices((d["id"], f"{d['name']} (#{d['id']}, {d['rows']} rows)") for d in datasets)
    general: list[str] = []
    if form.validate_on_submit():
        try:
            data = form.to_request_data(model_id)
            job = services.start_evaluation(current(), services.validate(EvaluateRequest, data))
        except ApiError as exc:
            apply_error(form, exc, general)
        else:
            flash("Evaluation job queued.", "ok")
            return redirect(url_for(".job", job_id=job["id"]))
    jobs, _ = services.list_jobs(current(), model_id=model_id, job_type="classify", limit=20)
    evaluations, _ = services.list_jobs(current(), model_id=model_id, job_type="evaluate", limit=20)
    status = 400 if request.method == "POST" else 200
    return render_template("model.html", model=info, jobs=jobs, evaluations=evaluations, form=form,
                           delete_form=DeleteModelForm(), general_errors=general), status


@bp.get("/models/<int:model_id>/download")
def model_download(model_id: int):
    """The model's zip (``GET /api/v1/models/<id>/download`` for a logged-in browser: the API takes tokens only)."""
    result = model_files.download(current(), model_id)
    return Response(result.chunks, content_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{result.filename}"'})


@bp.post("/models/<int:model_id>/delete")
def model_delete(model_id: int):
    """Delete the model (``services.delete_model``): back to the list, or to the model with the reason it was
    refused (the jobs that use it)."""
    if not DeleteModelForm().validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    try:
        deleted = services.delete_model(current(), model_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
        return redirect(url_for(".model", model_id=model_id))
    flash(f"Model {deleted['name']}:v{deleted['version']} deleted: its files are gone; its jobs and predictions stay.",
          "ok")
    return redirect(url_for(".models"))
