"""Trained models: list and detail."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from core.specs import EvaluateRequest

from .. import services
from ..auth import current
from ..errors import ApiError
from ..forms import EvaluateForm, choices
from . import bp
from .forms_support import apply_error


@bp.get("/models")
def models():
    items, total = services.list_models(current(), limit=500)
    return render_template("models.html", models=items, total=total)


@bp.route("/models/<int:model_id>", methods=["GET", "POST"])
def model(model_id: int):
    """A model's facts and metrics, its recent jobs, and a form to evaluate it on a labelled dataset."""
    info = services.get_model(current(), model_id)
    datasets, _ = services.list_datasets(current(), limit=1000)
    form = EvaluateForm()
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
                           general_errors=general), status
