"""The training form: pick a dataset, columns, a model family and its options."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from core import task_types
from core.options import FAMILIES, TrainRequest

from .. import services
from ..auth import current
from ..errors import ApiError
from ..forms import TrainForm, choices
from . import bp
from .filters import query_int
from .forms_support import TEXT_COLUMN_NAMES, apply_error, guess_column

LABEL_COLUMN_NAMES = ("label", "labels", "sentiment", "class", "category", "target")
TOKENS_COLUMN_NAMES = ("tokens", "words")
TAGS_COLUMN_NAMES = ("tags", "ner_tags", "labels", "pos_tags")
# question answering's and multiple choice's context column (SWAG's: sent1; swag's "regular" CSV: startphrase)
CONTEXT_COLUMN_NAMES = ("context", "sent1", "startphrase")
# span data: JSON Lines "entities" / "spans", a Label Studio export's "annotations" (its text column is "data");
# these three name span columns only, where "label" is as often a text dataset's class
SPAN_DATA_COLUMN_NAMES = ("entities", "spans", "annotations")
SPANS_COLUMN_NAMES = (*SPAN_DATA_COLUMN_NAMES, "label")
SPANS_TEXT_COLUMN_NAMES = (*TEXT_COLUMN_NAMES, "data")


def guess_token_data(columns: list[str]) -> str:
    """The token data a dataset of ``columns`` likely holds: "spans" when a column is named as span data's are and
    none as a tokens column, else "tokens"."""
    lowered = {c.lower() for c in columns}
    if lowered.isdisjoint(TOKENS_COLUMN_NAMES) and not lowered.isdisjoint(SPAN_DATA_COLUMN_NAMES):
        return "spans"
    return "tokens"


def task_type_info() -> dict:
    """What train.js needs to know of each task type: its families (None: all), metrics and default metric."""
    return {name: {"families": list(kind.families) if kind.families else None, "metrics": list(kind.metrics),
                   "default_metric": kind.default_metric}
            for name, kind in ((n, task_types.get(n)) for n in task_types.names())}


@bp.route("/train", methods=["GET", "POST"])
def train():
    datasets, _ = services.list_datasets(current(), limit=1000)
    form = TrainForm()
    form.dataset_id.choices = choices((d["id"], f"{d['name']} (#{d['id']}, {d['rows']} rows)") for d in datasets)
    if request.method == "GET":
        wanted = query_int("dataset_id")
        if wanted is not None and any(d["id"] == wanted for d in datasets):
            form.dataset_id.data = wanted
        wanted_family = request.args.get("family")
        if wanted_family in FAMILIES:
            form.family.data = wanted_family
        wanted_task_type = request.args.get("task_type")
        if wanted_task_type in task_types.names():
            form.task_type.data = wanted_task_type
    selected = next((d for d in datasets if d["id"] == form.dataset_id.data), datasets[0] if datasets else None)
    columns = services.dataset_columns(current(), selected) if selected else []
    for field in (form.text_column, form.label_column, form.label_columns, form.tokens_column, form.tags_column,
                  form.spans_column):
        field.choices = choices((c, c) for c in columns)
    form.text_pair_column.choices = choices([("", "none (single texts)"), *((c, c) for c in columns)])
    for field in (form.question_column, form.context_column, form.answers_column):
        field.choices = choices([("", "default"), *((c, c) for c in columns)])
    form.choices_column.choices = choices([("", "the ending0, ending1, ... columns"),
                                           *((c, f"{c} (a JSON array per row)") for c in columns)])
    form.validation_dataset_id.choices = choices(
        [("", "none: hold out the validation split"), *((d["id"], f"{d['name']} (#{d['id']})") for d in datasets)]
    )
    if request.method == "GET" and selected:
        form.dataset_id.data = selected["id"]
        form.text_column.data = guess_column(columns, TEXT_COLUMN_NAMES, 0)
        form.label_column.data = guess_column(columns, LABEL_COLUMN_NAMES, 1)
        form.tokens_column.data = guess_column(columns, TOKENS_COLUMN_NAMES, 0)
        form.tags_column.data = guess_column(columns, TAGS_COLUMN_NAMES, 1)
        form.token_data.data = guess_token_data(columns)
        form.spans_column.data = guess_column(columns, SPANS_COLUMN_NAMES, 1)
        if form.token_data.data == "spans":
            form.text_column.data = guess_column(columns, SPANS_TEXT_COLUMN_NAMES, 0)
        for field, name in ((form.question_column, "question"), (form.answers_column, "answers")):
            field.data = name if name in columns else ""
        # "" (default) leaves the context to the server's defaults; a SWAG file's is sent1
        form.context_column.data = next((c for c in CONTEXT_COLUMN_NAMES if c in columns), "")

    general: list[str] = []
    if form.validate_on_submit():
        try:
            job = services.start_training(current(), services.validate(TrainRequest, form.to_request_data()))
        except ApiError as exc:
            apply_error(form, exc, general, aliases={"class_weights": "class_weights_balanced"})
        else:
            flash("Training job queued.", "ok")
            return redirect(url_for(".job", job_id=job["id"]))
    status = 400 if request.method == "POST" else 200
    return render_template("train.html", form=form, datasets=datasets, general_errors=general,
                           task_type_info=task_type_info(), column_names=column_names()), status


def column_names() -> dict:
    """The column names train.js guesses from when the dataset changes (the same as this page's)."""
    return {"text": TEXT_COLUMN_NAMES, "label": LABEL_COLUMN_NAMES, "tokens": TOKENS_COLUMN_NAMES,
            "tags": TAGS_COLUMN_NAMES, "spans": SPANS_COLUMN_NAMES, "spans_text": SPANS_TEXT_COLUMN_NAMES,
            "context": CONTEXT_COLUMN_NAMES, "span_data": SPAN_DATA_COLUMN_NAMES}
