"""Dashboard."""
from __future__ import annotations

from flask import render_template

from .. import services
from ..auth import current
from . import bp


@bp.get("/")
def index():
    recent_jobs, job_total = services.list_jobs(current(), limit=10)
    models, model_total = services.list_models(current(), limit=5)
    datasets, dataset_total = services.list_datasets(current(), limit=5)
    return render_template(
        "index.html",
        jobs=recent_jobs,
        job_total=job_total,
        job_counts=services.job_counts(current()),
        models=models,
        model_total=model_total,
        datasets=datasets,
        dataset_total=dataset_total,
    )
