"""The classification form: one text per line, classified by a trained model in a classify job."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from core.specs import ClassifyRequest

from .. import services
from ..errors import ApiError
from ..forms import ClassifyForm, choices
from . import bp
from .forms_support import apply_error


@bp.route("/classify", methods=["GET", "POST"])
def classify():
    models, _ = services.list_models(limit=1000)
    form = ClassifyForm()
    form.model_id.choices = choices(
        (m["id"], f"{m['name']} v{m['version']} ({m['family']}, #{m['id']})") for m in models
    )
    if request.method == "GET":
        wanted = request.args.get("model_id", "")
        if wanted.isdigit() and any(m["id"] == int(wanted) for m in models):
            form.model_id.data = int(wanted)
    general: list[str] = []
    if form.validate_on_submit():
        try:
            body = {"model_id": form.model_id.data, "texts": form.text_lines()}
            job = services.start_classification(services.validate(ClassifyRequest, body))
        except ApiError as exc:
            apply_error(form, exc, general)
        else:
            flash(f"Classification job queued for {len(form.text_lines())} text(s).", "ok")
            return redirect(url_for(".job", job_id=job["id"]))
    status = 400 if request.method == "POST" else 200
    return render_template("classify.html", form=form, models=models, general_errors=general), status
