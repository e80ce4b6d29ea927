"""The classification form: texts typed one per line, or a stored dataset's text column, classified by a
trained model in a classify job."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from core.specs import ClassifyRequest
from core.task_types.multiple_choice import NAME as MULTIPLE_CHOICE
from core.task_types.question_answering import NAME as QUESTION_ANSWERING
from core.task_types.token_classification import NAME as TOKEN_CLASSIFICATION

from .. import services
from ..auth import current
from ..errors import ApiError
from ..forms import ClassifyForm, choices
from . import bp
from .filters import query_int
from .forms_support import apply_error

NO_DATASET = "— none: classify the texts above —"
NO_ID_COLUMN = "— none —"
AS_TRAINED = "— as the model was trained —"  # its text column, or its text_template


def _wanted_id(name: str, rows: list[dict]) -> int | None:
    """``?name=<id>`` of a GET, when it names one of ``rows``."""
    wanted = query_int(name)
    return wanted if wanted is not None and any(r["id"] == wanted for r in rows) else None


def _column_choices(form: ClassifyForm, datasets: list[dict]) -> None:
    """Offer the chosen dataset's columns (none while no dataset is chosen); classify.js refills them on change."""
    selected = next((d for d in datasets if d["id"] == form.dataset_id.data), None)
    columns = services.dataset_columns(current(), selected) if selected else []
    # "as the model was trained" first and by default: the model's text column, or its text_template
    form.text_column.choices = choices([("", AS_TRAINED), *((c, c) for c in columns)])
    form.id_column.choices = choices([("", NO_ID_COLUMN), *((c, c) for c in columns)])


@bp.route("/classify", methods=["GET", "POST"])
def classify():
    models, _ = services.list_models(current(), limit=1000)
    datasets, _ = services.list_datasets(current(), limit=1000)
    form = ClassifyForm()
    form.model_id.choices = choices(
        (m["id"], f"{m['name']} v{m['version']} ({m['family']}, #{m['id']})") for m in models
    )
    form.dataset_id.choices = choices(
        [("", NO_DATASET), *((d["id"], f"{d['name']} (#{d['id']}, {d['rows']} rows)") for d in datasets)]
    )
    if request.method == "GET":
        form.model_id.data = _wanted_id("model_id", models) or form.model_id.data
        form.dataset_id.data = _wanted_id("dataset_id", datasets)
    _column_choices(form, datasets)
    token_models = [m["id"] for m in models if m.get("task_type") == TOKEN_CLASSIFICATION]
    choice_models = [m["id"] for m in models if m.get("task_type") == MULTIPLE_CHOICE]
    form.choice_models = tuple(choice_models)
    qa_models = [m["id"] for m in models if m.get("task_type") == QUESTION_ANSWERING]
    general: list[str] = []
    if form.validate_on_submit():
        try:
            data = form.to_request_data(token_model=form.model_id.data in token_models,
                                        qa_model=form.model_id.data in qa_models)
            job = services.start_classification(current(), services.validate(ClassifyRequest, data))
        except ApiError as exc:
            apply_error(form, exc, general, aliases={"pairs": "text_pairs", "tokens": "texts", "questions": "texts",
                                                     "choice_questions": "choices"})
        else:
            flash(_queued_message(job, datasets), "ok")
            return redirect(url_for(".job", job_id=job["id"]))
    general.extend(form.form_errors)
    status = 400 if request.method == "POST" else 200
    return render_template("classify.html", form=form, models=models, datasets=datasets, general_errors=general,
                           token_models=token_models, qa_models=qa_models, choice_models=choice_models), status


def _queued_message(job: dict, datasets: list[dict]) -> str:
    count = job["params"].get("text_count")
    if job["dataset_id"] is None:
        return f"Classification job queued for {count} text(s)."
    name = next((d["name"] for d in datasets if d["id"] == job["dataset_id"]), f"#{job['dataset_id']}")
    return f"Classification job queued for {count} row(s) of dataset {name}."
