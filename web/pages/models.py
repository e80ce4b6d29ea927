"""Trained models: list and detail."""
from __future__ import annotations

from flask import render_template

from .. import services
from ..auth import current
from . import bp


@bp.get("/models")
def models():
    items, total = services.list_models(current(), limit=500)
    return render_template("models.html", models=items, total=total)


@bp.get("/models/<int:model_id>")
def model(model_id: int):
    info = services.get_model(current(), model_id)
    jobs, _ = services.list_jobs(current(), model_id=model_id, job_type="classify", limit=20)
    return render_template("model.html", model=info, jobs=jobs)
