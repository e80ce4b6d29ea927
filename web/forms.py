"""Flask-WTF forms (CSRF-protected). Field-level rules live in the pydantic specs; these forms only collect
input, and ``web.pages`` turns pydantic/service errors back into field messages."""
from __future__ import annotations

import typing

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    FloatField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

try:  # WTForms >= 3.3 wants SelectChoice objects; older versions take (value, label) tuples
    from wtforms.fields.choices import SelectChoice as _SelectChoice
except ImportError:  # pragma: no cover
    _SelectChoice = None

from core import task_types
from core.task_types.multiple_choice import NAME as MULTIPLE_CHOICE
from core.task_types.question_answering import NAME as QUESTION_ANSWERING
from core.task_types.token_classification import NAME as TOKEN_CLASSIFICATION
from core.options import FAMILY_INFO, applies, option_fields, task_type_defaults
from core.specs import AggregationStrategy

# the classify form's order: "first" (the default), the word-level ones, then the token-level ones; any strategy
# core.specs adds later follows
_ORDER = ("first", "average", "max", "simple", "none")
AGGREGATION_STRATEGIES = tuple(sorted(typing.get_args(AggregationStrategy),
                                      key=lambda s: _ORDER.index(s) if s in _ORDER else len(_ORDER)))
OPTION_GROUPS = {"data": "Data shape", "model": "Model", "training": "Training", "evaluation": "Evaluation"}


def choices(pairs) -> list:
    """``[(value, label), ...]`` as select choices for the installed WTForms."""
    if _SelectChoice is None:  # pragma: no cover
        return [(value, label) for value, label in pairs]
    return [_SelectChoice(value, label) for value, label in pairs]


def _bounds(field_info) -> dict:
    """HTML min/max attributes from the option's pydantic constraints (the server enforces them anyway)."""
    attrs = {}
    for constraint in field_info.metadata:
        for name, attr in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(constraint, name, None) is not None:
                attrs[attr] = getattr(constraint, name)
    return attrs


def option_task_types(name: str, meta) -> tuple[str, ...]:
    """The task types an option applies to: those its ``Opt.task_types`` names (None: every one), and for an option
    that is a data field of some task type (``text_template``), only those whose ``request_fields`` read it."""
    data_fields = {f for t in task_types.names() for f in task_types.get(t).request_fields}
    return tuple(t for t in task_types.names()
                 if (meta.task_types is None or t in meta.task_types)
                 and (name not in data_fields or name in task_types.get(t).request_fields))


def _option_field(name: str, field_info, meta):
    """A WTForms field for one declared option, built from its type and default (see ``core.options``)."""
    annotation = field_info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0]
    default = field_info.default
    hint = field_info.description
    render = {"data-families": " ".join(meta.families or FAMILY_INFO),
              "data-task-types": " ".join(option_task_types(name, meta))}
    own = task_type_defaults(name)
    if own:  # left empty, so that each task type's own default applies; the placeholder says which
        render["placeholder"] = f"{default}; " + ", ".join(f"{task_types.get(t).label.split(' (')[0].lower()}: {v}"
                                                           for t, v in own.items())
        default = None
    if kind is bool:
        return BooleanField(meta.label, default=bool(default), description=hint, render_kw=render)
    if typing.get_origin(kind) is typing.Literal:
        values = [("", "default")] if default is None else []
        values += [(v, v) for v in typing.get_args(kind)]
        return SelectField(meta.label, choices=choices(values), default="" if default is None else default,
                           description=hint, render_kw=render)
    required = [Optional()]  # left empty: the declared default applies
    if kind is int:
        return IntegerField(meta.label, default=default, validators=required, description=hint,
                            render_kw={**render, "type": "number", **_bounds(field_info)})
    if kind is float:
        return FloatField(meta.label, default=default, validators=required, description=hint, render_kw=render)
    return StringField(meta.label, default=default, validators=[Optional()], description=hint, render_kw=render)


class UploadDatasetForm(FlaskForm):
    file = FileField("CSV, TSV, JSON or JSONL file",
                     validators=[FileRequired("choose a CSV, TSV, JSON or JSONL file to upload")])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])


# token classification's two shapes of training data (``core.task_types.token_classification.reads_spans``)
TOKEN_DATA = {"tokens": "Tokens + tags (a JSON array of each per row)",
              "spans": "Text + character spans (JSON Lines entities, Label Studio)"}


class TrainFormBase(FlaskForm):
    """The data fields are written here (their choices come from the chosen dataset); every training option is
    generated from its declaration in ``core.options`` (see :func:`_option_field`), one fieldset per group.

    The task type (``core.task_types``) decides which data fields are read: text classification's text / pair /
    label column(s), or token classification's tokens and tags columns, or (``token_data`` "spans") its text and
    spans columns; options of other task types are left out of the request (the server judges the rest)."""

    task_type = SelectField("Task type", choices=choices((t, task_types.get(t).label) for t in task_types.names()),
                            default=task_types.DEFAULT)
    dataset_id = SelectField("Dataset", coerce=int, validators=[InputRequired("choose a dataset")])
    validation_dataset_id = SelectField("Validation dataset (optional)", coerce=lambda v: _optional_int(v),
                                        validators=[Optional()], validate_choice=False)
    name = StringField("Model name (optional)", validators=[Optional(), Length(max=200)])
    family = SelectField("Model family", choices=choices((f, i.label) for f, i in FAMILY_INFO.items()), default="bert")
    text_column = SelectField("Text column", validate_choice=False, validators=[Optional()])
    text_pair_column = SelectField("Second text column (sentence pairs, optional)", validate_choice=False,
                                   validators=[Optional()])
    label_column = SelectField("Label column", validate_choice=False)
    label_columns = SelectMultipleField("Label columns (multitask: one task each; multi-label: one 0/1 column each)",
                                        validate_choice=False)
    # token classification: columns of JSON arrays of strings, one token (tag) per word
    tokens_column = SelectField("Tokens column", validate_choice=False, validators=[Optional()])
    tags_column = SelectField("Tags column", validate_choice=False, validators=[Optional()])
    # or span data: the text column above and a column of character spans per text
    token_data = SelectField("Token data", choices=choices(TOKEN_DATA.items()), default="tokens")
    spans_column = SelectField("Spans column", validate_choice=False)  # required for span data: validate_spans_column
    # question answering: a question, its context and the answers (empty: the defaults, or a nested SQuAD file);
    # multiple choice: a context, an optional question, the choices (numbered ending<N> columns or one list column)
    # and the label column above (the right choice's position or text)
    question_column = SelectField("Question column", validate_choice=False, validators=[Optional()])
    context_column = SelectField("Context column", validate_choice=False, validators=[Optional()])
    answers_column = SelectField("Answers column", validate_choice=False, validators=[Optional()])
    choices_column = SelectField("Choices", validate_choice=False, validators=[Optional()])
    encoder = StringField("Encoder (optional)", validators=[Optional(), Length(max=500)])
    class_weights_balanced = BooleanField("Balanced class weights")

    def option_groups(self) -> list[tuple[str, list]]:
        """``[(legend, [fields])]`` of the generated option fields, in declaration order."""
        return [(legend, [self[name] for name, _, meta in option_fields(group)])
                for group, legend in OPTION_GROUPS.items()]

    def tokens(self) -> bool:
        """Whether token classification is chosen (tokens and tags columns instead of texts and labels)."""
        return self.task_type.data == TOKEN_CLASSIFICATION

    def spans(self) -> bool:
        """Whether token classification reads span data: a text and a spans column instead of tokens and tags."""
        return self.tokens() and self.token_data.data == "spans"

    def questions(self) -> bool:
        """Whether question answering is chosen (question, context and answers columns)."""
        return self.task_type.data == QUESTION_ANSWERING

    def multiple_choice(self) -> bool:
        """Whether multiple choice is chosen (context, question, choices and label columns)."""
        return self.task_type.data == MULTIPLE_CHOICE

    def _texts(self) -> bool:
        """Whether text classification's text and label fields are read."""
        return not self.tokens() and not self.questions() and not self.multiple_choice()

    def validate_text_column(self, field) -> None:
        if self._texts() and not field.data and not self.text_template.data:
            raise ValidationError("choose the text column (or write a text template)")

    def validate_spans_column(self, field) -> None:
        if self.spans() and not field.data:
            raise ValidationError("choose the column of entity spans")

    def validate_label_column(self, field) -> None:
        if self._texts() and not self._uses_label_columns() and not field.data:
            raise ValidationError("choose the label column")

    def validate_label_columns(self, field) -> None:
        if self._texts() and self.family.data == "multitask" and len([c for c in field.data or [] if c]) < 2:
            raise ValidationError("multitask needs at least 2 label columns (one task per column)")

    def _uses_label_columns(self) -> bool:
        return self.family.data == "multitask" or bool(self.multi_label.data and self.label_columns.data)

    def to_request_data(self) -> dict:
        """The body of a ``TrainRequest``: the task type and its data fields, then every option that applies to the
        chosen task type and family (empty optional fields are left out, so the declared defaults apply)."""
        family, task_type = self.family.data, self.task_type.data
        kind = task_types.get(task_type) if task_type in task_types.names() else None
        data: dict = {"dataset_id": self.dataset_id.data, "task_type": task_type, "family": family}
        if self.spans():
            columns: tuple[str, ...] = ("text_column", "spans_column")
        elif self.tokens():
            columns = ("tokens_column", "tags_column")
        elif self.questions():
            columns = ("question_column", "context_column", "answers_column")
        elif self.multiple_choice():
            # an empty question: the dataset's "question" column when it has one; empty choices: its ending<N> columns
            columns = ("context_column", "question_column", "choices_column")
            data["label_column"] = self.label_column.data or None
        else:
            columns = ("text_column", "text_pair_column")
            if self._uses_label_columns():
                data["label_columns"] = [c for c in (self.label_columns.data or []) if c]
            else:
                data["label_column"] = self.label_column.data or None
        for optional in ("name", "encoder", *columns, "validation_dataset_id"):
            value = getattr(self, optional).data
            if value not in (None, ""):
                data[optional] = value
        for name, _, meta in option_fields():
            if meta.group is None or not applies(meta, family):
                continue
            if kind is not None and kind.name not in option_task_types(name, meta):
                continue
            value = self[name].data
            if value in (None, ""):
                continue
            if name == "metric" and kind is not None and value not in kind.metrics:
                continue  # the select's default is text classification's: the task type's own default applies
            data[name] = value
        if data.get("text_template"):
            data.pop("text_column", None)
        if self.class_weights_balanced.data:
            data["class_weights"] = "balanced"
        return data


def with_option_fields(base: type[TrainFormBase]) -> type[TrainFormBase]:
    """``base`` plus one generated field per declared option that has a form group."""
    fields = {name: _option_field(name, info, meta) for name, info, meta in option_fields() if meta.group is not None}
    return type("TrainForm", (base,), fields)


TrainForm = with_option_fields(TrainFormBase)


def _optional_int(value) -> int | None:
    """Coerce a select's value to int, with "" (the "none" option) as None."""
    return None if value in (None, "") else int(value)


def _lines(text: str | None) -> list[str]:
    """The non-blank lines of a text box, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class ClassifyForm(FlaskForm):
    """Texts typed one per line, or a stored dataset's text column (or the model's own text column / template)
    and optionally its id column: exactly one."""

    model_id = SelectField("Model", coerce=int, validators=[InputRequired("choose a model")])
    texts = TextAreaField("Texts (one per line)", validators=[Optional()])
    # sentence-pair models: line k of each box is one pair
    text_pairs = TextAreaField("Second texts (sentence-pair models, one per line)", validators=[Optional()])
    # token-classification models: how sub-word predictions become entities (shown for token models only)
    aggregation_strategy = SelectField(
        "Aggregation strategy", choices=choices((s, s) for s in AGGREGATION_STRATEGIES), default="first",
        description="How sub-word predictions become entities, as in the transformers pipeline: first (each word "
        "takes its first sub-token's tag), average, max, simple (per token, then grouped) or none (one per token).")
    # token-classification models: each typed line a sentence of space-separated tokens (the API's ``tokens``)
    pretokenized = BooleanField(
        "Pre-tokenized: one sentence per line, tokens separated by spaces",
        description="Each word is tagged as given (no entity grouping): the result lists every token with its tag "
        "and score. For token-classification models.")
    dataset_id = SelectField("Dataset", coerce=_optional_int, validators=[Optional()])
    # filled from the chosen dataset (server side, and by classify.js when the dataset changes)
    text_column = SelectField("Text column", validate_choice=False, validators=[Optional()])
    id_column = SelectField("Id column (optional)", validate_choice=False, validators=[Optional()])
    # multiple-choice models: one question typed in (shown for those models only)
    context = TextAreaField("Context", validators=[Optional()])
    question = StringField("Question (optional)", validators=[Optional()])
    choices = TextAreaField("Choices (one per line)", validators=[Optional()])
    choice_models: tuple[int, ...] = ()  # the view sets the ids of the multiple-choice models among the choices

    def choice_model(self) -> bool:
        """Whether the chosen model is a multiple-choice model (a context and choices instead of texts)."""
        return self.model_id.data in self.choice_models

    def text_lines(self) -> list[str]:
        return _lines(self.texts.data)

    def pair_lines(self) -> list[str]:
        return _lines(self.text_pairs.data)

    def validate(self, extra_validators=None) -> bool:
        """The fields' own checks, then: texts or a dataset, not both and not neither."""
        if not super().validate(extra_validators):
            return False
        if self.choice_model():
            return self._validate_choice_question()
        if self.text_lines() and self.dataset_id.data is not None:
            self.form_errors.append("Type texts or choose a dataset, not both.")
            return False
        if not self.text_lines() and self.dataset_id.data is None:
            self.texts.errors = [*self.texts.errors, "enter at least one text, or choose a dataset"]
            return False
        if self.pair_lines() and self.dataset_id.data is not None:
            self.text_pairs.errors = [*self.text_pairs.errors, "second texts go with typed texts, not a dataset"]
            return False
        if self.pretokenized.data and (self.dataset_id.data is not None or self.pair_lines()):
            self.pretokenized.errors = [*self.pretokenized.errors, "pre-tokenized applies to the typed texts alone "
                                        "(a token model reads a dataset's tokens column as tokens already)"]
            return False
        if self.pair_lines() and len(self.pair_lines()) != len(self.text_lines()):
            self.text_pairs.errors = [*self.text_pairs.errors, f"give one second text per text: "
                                      f"{len(self.text_lines())} text(s), {len(self.pair_lines())} second text(s)"]
            return False
        return True

    def _validate_choice_question(self) -> bool:
        """A multiple-choice model: a context and at least 2 choices, or a dataset (not both)."""
        typed = bool((self.context.data or "").strip() or _lines(self.choices.data))
        if typed and self.dataset_id.data is not None:
            self.form_errors.append("Type a question or choose a dataset, not both.")
            return False
        if self.dataset_id.data is not None:
            return True
        if not (self.context.data or "").strip():
            self.context.errors = [*self.context.errors, "enter the context, or choose a dataset"]
            return False
        if len(_lines(self.choices.data)) < 2:
            self.choices.errors = [*self.choices.errors, "enter at least 2 choices, one per line"]
            return False
        return True

    def to_request_data(self, *, token_model: bool = False, qa_model: bool = False) -> dict:
        """The body of a ``ClassifyRequest``: the typed texts, or the dataset and its columns; for a
        token-classification model (``token_model``) its aggregation strategy too. Pre-tokenized lines go as
        ``tokens`` whatever the model: a text model's refusal is the API's (``tokens_not_supported``). For a
        question-answering model (``qa_model``) line k of the texts is a question and line k of the second texts
        its context (the API's ``questions``). For a multiple-choice model (the form's ``choice_models``), the typed
        context, question and choices (the API's ``choice_questions``)."""
        data: dict = {"model_id": self.model_id.data}
        if qa_model and self.dataset_id.data is None and not self.pretokenized.data:
            return {**data, "questions": [{"question": q, "context": c}
                                          for q, c in zip(self.text_lines(), self.pair_lines())]}
        if self.pretokenized.data and self.dataset_id.data is None:
            return {**data, "tokens": [line.split() for line in self.text_lines()]}
        if token_model and self.aggregation_strategy.data:
            data["aggregation_strategy"] = self.aggregation_strategy.data
        if self.choice_model() and self.dataset_id.data is None:
            question = (self.question.data or "").strip()
            item = {"context": self.context.data.strip(), "choices": _lines(self.choices.data)}
            return {**data, "choice_questions": [{**item, **({"question": question} if question else {})}]}
        if self.dataset_id.data is None and self.pair_lines():
            return {**data, "pairs": [list(p) for p in zip(self.text_lines(), self.pair_lines())]}
        if self.dataset_id.data is None:
            return {**data, "texts": self.text_lines()}
        data["dataset_id"] = self.dataset_id.data
        if self.text_column.data:  # else the text is read as the model was trained
            data["text_column"] = self.text_column.data
        if self.id_column.data:
            data["id_column"] = self.id_column.data
        return data


class EvaluateForm(FlaskForm):
    """Score a model on a labelled dataset; columns left empty default to those the model was trained on."""

    # the page offers the datasets of the model's task type; another one posted gets the API's reason (a text
    # dataset for a token model, someone else's dataset), not a bare "Not a valid choice"
    dataset_id = SelectField("Labelled dataset", coerce=int, validate_choice=False,
                             validators=[InputRequired("choose a dataset")])
    text_column = StringField("Text column (default: the model's)", validators=[Optional(), Length(max=200)])
    label_column = StringField("Label column (default: the model's)", validators=[Optional(), Length(max=200)])

    def for_token_model(self, spans: bool = False) -> None:
        """A token model reads a tokens and a tags column (the request's ``text_column`` / ``label_column``); one
        trained on span data (``spans``) a text and a spans column."""
        if spans:
            self.dataset_id.label.text = "Dataset of texts with entity spans"
            self.text_column.label.text = "Text column (default: the model's)"
            self.label_column.label.text = "Spans column (default: the model's)"
            return
        self.dataset_id.label.text = "Token dataset"
        self.text_column.label.text = "Tokens column (default: the model's)"
        self.label_column.label.text = "Tags column (default: the model's)"

    def to_request_data(self, model_id: int) -> dict:
        """The body of an ``EvaluateRequest`` for ``model_id``."""
        data = {"model_id": model_id, "dataset_id": self.dataset_id.data}
        for name in ("text_column", "label_column"):
            if getattr(self, name).data:
                data[name] = getattr(self, name).data.strip()
        return data


class CancelForm(FlaskForm):
    """Only carries the CSRF token for the cancel button."""


class DeleteModelForm(FlaskForm):
    """A model's delete button (CSRF only)."""


class DeleteDatasetForm(FlaskForm):
    """A dataset's delete button (CSRF only)."""


class DeleteJobForm(FlaskForm):
    """A finished job's delete button (CSRF only)."""


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class LogoutForm(FlaskForm):
    """The logout button: a POST with a CSRF token, so another site cannot log a user out."""


class TokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=100)])


class RevokeTokenForm(FlaskForm):
    """A revoke button (CSRF only)."""
