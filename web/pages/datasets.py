"""Dataset upload, list and detail pages."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from .. import services
from ..auth import current
from ..forms import UploadDatasetForm
from . import bp
from .forms_support import submit_upload


@bp.route("/datasets", methods=["GET", "POST"])
def datasets():
    form = UploadDatasetForm()
    dataset, general = submit_upload(form, lambda stream, filename, name: services.create_dataset(
        current(), stream, filename, name))
    if dataset is not None:
        flash(f"Uploaded “{dataset['name']}”: {dataset['rows']} rows, {len(dataset['columns'])} columns.", "ok")
        return redirect(url_for(".dataset", dataset_id=dataset["id"]))
    items, total = services.list_datasets(current(), limit=500)
    status = 400 if request.method == "POST" else 200
    return render_template("datasets.html", form=form, datasets=items, total=total, general_errors=general), status


@bp.get("/datasets/<int:dataset_id>.json")
def dataset_json(dataset_id: int):
    """The dataset and its profile as the API returns them, for the train and classify forms' column pickers."""
    return services.get_dataset(current(), dataset_id)


@bp.get("/datasets/<int:dataset_id>")
def dataset(dataset_id: int):
    info = services.get_dataset(current(), dataset_id)
    jobs, _ = services.list_jobs(current(), dataset_id=dataset_id, limit=20)
    return render_template("dataset.html", dataset=info, jobs=jobs)
