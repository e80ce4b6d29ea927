"""Dataset upload, list and detail pages, and the delete button."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from .. import services
from ..auth import current
from ..errors import ApiError
from ..forms import DeleteDatasetForm, UploadDatasetForm
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
    can_delete = current().is_admin or not info["shared"]  # a shared sample: admins only (the service decides)
    return render_template("dataset.html", dataset=info, jobs=jobs, can_delete=can_delete,
                           delete_form=DeleteDatasetForm())


@bp.post("/datasets/<int:dataset_id>/delete")
def dataset_delete(dataset_id: int):
    """Delete the dataset (``services.delete_dataset``): back to the list, or to the dataset with the reason it was
    refused (the jobs that use it)."""
    if not DeleteDatasetForm().validate_on_submit():
        abort(400, "the form expired: reload the page and try again")
    try:
        deleted = services.delete_dataset(current(), dataset_id)
    except ApiError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
        return redirect(url_for(".dataset", dataset_id=dataset_id))
    flash(f"Dataset “{deleted['name']}” deleted; the jobs and models that used it stay.", "ok")
    return redirect(url_for(".datasets"))
