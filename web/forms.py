"""Flask-WTF forms (CSRF-protected). Field-level rules live in the pydantic specs; these forms only collect
input, and ``web.pages`` turns pydantic/service errors back into field messages."""
from __future__ import annotations

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

from core.specs import FAMILIES, TrainRequest

FAMILY_LABELS = {
    "bert": "BERT: encoder + linear head",
    "distilbert": "DistilBERT: distilled encoder + linear head",
    "bert_lstm": "BERT + LSTM: encoder + (bi)LSTM head",
    "multitask": "Multitask: shared encoder, one head per label column",
}

_DEFAULTS = TrainRequest.model_fields


def choices(pairs) -> list:
    """``[(value, label), ...]`` as select choices for the installed WTForms."""
    if _SelectChoice is None:  # pragma: no cover
        return [(value, label) for value, label in pairs]
    return [_SelectChoice(value, label) for value, label in pairs]


def _default(name: str):
    return _DEFAULTS[name].default


class UploadDatasetForm(FlaskForm):
    file = FileField("CSV, TSV or JSONL file", validators=[FileRequired("choose a CSV, TSV or JSONL file to upload")])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])


class TrainForm(FlaskForm):
    dataset_id = SelectField("Dataset", coerce=int, validators=[InputRequired("choose a dataset")])
    name = StringField("Model name (optional)", validators=[Optional(), Length(max=200)])
    family = SelectField("Model family", choices=choices((f, FAMILY_LABELS[f]) for f in FAMILIES), default="bert")
    text_column = SelectField("Text column", validate_choice=False, validators=[DataRequired("choose the text column")])
    label_column = SelectField("Label column", validate_choice=False)
    label_columns = SelectMultipleField("Label columns (multitask: one task per column)", validate_choice=False)
    encoder = StringField("Encoder (optional)", validators=[Optional(), Length(max=500)])
    epochs = IntegerField("Epochs", default=_default("epochs"), validators=[InputRequired()])
    batch_size = IntegerField("Batch size", default=_default("batch_size"), validators=[InputRequired()])
    learning_rate = FloatField("Learning rate", default=_default("learning_rate"), validators=[InputRequired()])
    max_length = IntegerField("Max length (tokens)", default=_default("max_length"), validators=[InputRequired()])
    validation_split = FloatField("Validation split", default=_default("validation_split"),
                                  validators=[InputRequired()])
    encoder_lr = FloatField("Encoder learning rate (optional)", validators=[Optional()])
    head_lr = FloatField("Head learning rate (optional)", validators=[Optional()])
    class_weights_balanced = BooleanField("Balanced class weights")
    freeze_encoder = BooleanField("Freeze encoder (train the head only)")
    lstm_hidden = IntegerField("LSTM hidden size", default=_default("lstm_hidden"), validators=[Optional()])
    bidirectional = BooleanField("Bidirectional LSTM", default=True)

    def validate_label_column(self, field) -> None:
        if self.family.data != "multitask" and not field.data:
            raise ValidationError("choose the label column")

    def validate_label_columns(self, field) -> None:
        if self.family.data == "multitask" and len([c for c in field.data or [] if c]) < 2:
            raise ValidationError("multitask needs at least 2 label columns (one task per column)")

    def to_request_data(self) -> dict:
        """The body of a ``TrainRequest``, with only the options that apply to the chosen family."""
        family = self.family.data
        data: dict = {
            "dataset_id": self.dataset_id.data,
            "family": family,
            "text_column": self.text_column.data,
            "epochs": self.epochs.data,
            "batch_size": self.batch_size.data,
            "learning_rate": self.learning_rate.data,
            "max_length": self.max_length.data,
            "validation_split": self.validation_split.data,
            "freeze_encoder": bool(self.freeze_encoder.data),
        }
        if family == "multitask":
            data["label_columns"] = [c for c in (self.label_columns.data or []) if c]
        else:
            data["label_column"] = self.label_column.data or None
        if family == "bert_lstm":
            hidden = self.lstm_hidden.data
            data["lstm_hidden"] = hidden if hidden is not None else _default("lstm_hidden")
            data["bidirectional"] = bool(self.bidirectional.data)
        for optional in ("name", "encoder", "encoder_lr", "head_lr"):
            value = getattr(self, optional).data
            if value not in (None, ""):
                data[optional] = value
        if self.class_weights_balanced.data:
            data["class_weights"] = "balanced"
        return data


def _optional_int(value) -> int | None:
    """Coerce a select's value to int, with "" (the "none" option) as None."""
    return None if value in (None, "") else int(value)


class ClassifyForm(FlaskForm):
    """Texts typed one per line, or a stored dataset's text column (and optionally its id column): exactly one."""

    model_id = SelectField("Model", coerce=int, validators=[InputRequired("choose a model")])
    texts = TextAreaField("Texts (one per line)", validators=[Optional()])
    dataset_id = SelectField("Dataset", coerce=_optional_int, validators=[Optional()])
    # filled from the chosen dataset (server side, and by classify.js when the dataset changes)
    text_column = SelectField("Text column", validate_choice=False, validators=[Optional()])
    id_column = SelectField("Id column (optional)", validate_choice=False, validators=[Optional()])

    def text_lines(self) -> list[str]:
        return [line.strip() for line in (self.texts.data or "").splitlines() if line.strip()]

    def validate(self, extra_validators=None) -> bool:
        """The fields' own checks, then: texts or a dataset, not both and not neither."""
        if not super().validate(extra_validators):
            return False
        if self.text_lines() and self.dataset_id.data is not None:
            self.form_errors.append("Type texts or choose a dataset, not both.")
            return False
        if not self.text_lines() and self.dataset_id.data is None:
            self.texts.errors = [*self.texts.errors, "enter at least one text, or choose a dataset"]
            return False
        if self.dataset_id.data is not None and not self.text_column.data:
            self.text_column.errors = [*self.text_column.errors, "choose the text column"]
            return False
        return True

    def to_request_data(self) -> dict:
        """The body of a ``ClassifyRequest``: the typed texts, or the dataset and its columns."""
        if self.dataset_id.data is None:
            return {"model_id": self.model_id.data, "texts": self.text_lines()}
        data = {"model_id": self.model_id.data, "dataset_id": self.dataset_id.data,
                "text_column": self.text_column.data}
        if self.id_column.data:
            data["id_column"] = self.id_column.data
        return data


class CancelForm(FlaskForm):
    """Only carries the CSRF token for the cancel button."""


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class LogoutForm(FlaskForm):
    """The logout button: a POST with a CSRF token, so another site cannot log a user out."""


class TokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=100)])


class RevokeTokenForm(FlaskForm):
    """A revoke button (CSRF only)."""
