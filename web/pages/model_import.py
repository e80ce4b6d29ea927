"""The page that imports a Hugging Face checkpoint (a zip) as a model: the form of ``POST /api/v1/models/import``."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import StringField
from wtforms.validators import Length, Optional

from core import hf_format

from .. import context, model_files
from ..auth import current
from . import bp
from .forms_support import submit_upload


class ModelImportForm(FlaskForm):
    file = FileField("Checkpoint zip", validators=[FileRequired("choose the zip of a checkpoint folder")])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])


@bp.route("/models/import", methods=["GET", "POST"])
def model_import():
    """Upload a zipped transformers checkpoint; on success, go to the new model's page."""
    form = ModelImportForm()
    model, general = submit_upload(form, lambda stream, filename, name: model_files.import_model(
        current(), stream, filename, name))
    if model is not None:
        flash(f"Imported “{model['name']}” version {model['version']} ({model['family']}, "
              f"{len(model['labels'])} labels).", "ok")
        return redirect(url_for(".model", model_id=model["id"]))
    status = 400 if request.method == "POST" else 200
    limit_mb = context.settings().max_model_upload_mb
    return render_template("model_import.html", form=form, general_errors=general, limit_mb=limit_mb,
                           architectures=list(hf_format.importable_architectures())), status
