"""Every model family and every training option, declared once (torch-free).

Request validation (:class:`TrainRequest`), the training loop's configuration (:class:`TrainConfig`), the train
form (``web.forms``), the OpenAPI document (the models' JSON schema) and the model builder (:func:`model_options`)
all read these declarations. Adding an option means adding one field below (with its :class:`Opt`) plus its use:
the model's constructor for a model option, ``ml`` for a training knob.

A field's :class:`Opt` says how people see it (label, form group), which families and task types it applies to and
whether it is passed to the model's constructor. A value other than the default for an option that does not apply
to the chosen family or task type is refused (422), so a typo never trains silently without the option. The task
types themselves (``task_type``: what shape of problem is trained) are declared in ``core.task_types``.
"""
from __future__ import annotations

import functools
import math
import string
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator
from pydantic.fields import FieldInfo

from . import task_types
from .task_types.multiple_choice import MAX_CHOICES
from .validation import ColumnName, SqlId, StrictModel


@dataclass(frozen=True)
class FamilyInfo:
    """A model family as users see it (the classes live in ``models.registry``, keyed by the same names)."""

    name: str
    label: str
    multi_label: bool = True  # can train multi-label classifiers
    multitask: bool = False  # several label columns = several tasks


FAMILY_INFO: dict[str, FamilyInfo] = {
    f.name: f
    for f in (
        FamilyInfo("bert", "BERT: encoder + linear head"),
        FamilyInfo("distilbert", "DistilBERT: distilled encoder + linear head"),
        FamilyInfo("bert_lstm", "BERT + LSTM: encoder + (bi)LSTM head from the last real token"),
        FamilyInfo("multitask", "Multitask: shared encoder, one head per label column", multi_label=False,
                   multitask=True),
    )
}
FAMILIES = tuple(FAMILY_INFO)
Family = Literal[FAMILIES]  # type: ignore[valid-type]  (Literal of a tuple = Literal of its members)
MULTI_LABEL_FAMILIES = tuple(f for f, info in FAMILY_INFO.items() if info.multi_label)

TaskTypeName = Literal[task_types.names()]  # type: ignore[valid-type]  (every registered task type)
TEXT_CLASSIFICATION = ("text-classification",)  # Opt.task_types of the options only text classification reads
TOKEN_CLASSIFICATION = ("token-classification",)
QUESTION_ANSWERING = ("question-answering",)

METRICS = tuple(dict.fromkeys(m for name in task_types.names() for m in task_types.get(name).metrics))
MAX_TEMPLATE_FIELDS = 10  # what early stopping and the best checkpoint follow


@dataclass(frozen=True)
class Opt:
    """How a training option is shown and used (pydantic keeps it in the field's metadata).

    ``group``: the train form's fieldset ("data", "training", "evaluation", "model"; None: API only).
    ``families``: the families it applies to (None: all). ``task_types``: the task types it applies to (None: all).
    ``model``: passed to the model's constructor.
    ``why_not``: appended to the error when it is set for a family it does not apply to.
    """

    label: str
    group: str | None = "training"
    families: tuple[str, ...] | None = None
    task_types: tuple[str, ...] | None = None
    model: bool = False
    why_not: str = ""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        schema = handler(core_schema)
        if self.families is not None:
            schema["x-families"] = list(self.families)  # the OpenAPI document says where an option applies
        if self.task_types is not None:
            schema["x-task-types"] = list(self.task_types)
        return schema


def opt(field: FieldInfo | None = None) -> Opt | None:
    """The :class:`Opt` of a model field (None for plain fields such as the data columns)."""
    return next((m for m in (field.metadata if field else ()) if isinstance(m, Opt)), None)


ClassWeights = Literal["balanced"] | list[Annotated[float, Field(ge=0)]] | dict[
    str, Literal["balanced"] | list[Annotated[float, Field(ge=0)]]
]


class TrainConfig(StrictModel):
    """Everything that defines a training run: the data's columns and shape, plus every option.

    The training loop (``ml.loop.train_classifier``) reads exactly this; :class:`TrainRequest` adds where the data
    comes from and the model's name.
    """

    # ---- what is trained: the task type (core.task_types), then which columns, what task shape
    task_type: TaskTypeName = Field(  # type: ignore[valid-type]
        default=task_types.DEFAULT,
        description="the shape of the problem: " + ", ".join(task_types.names()) + " (default " + task_types.DEFAULT
        + "); options of other task types are refused")
    text_column: ColumnName | None = Field(
        default=None, description="the column holding the text (optional when text_template builds it)")
    label_column: ColumnName | None = Field(
        default=None, description="the label column; for multi_label its cells hold labels joined by label_separator")
    label_columns: list[ColumnName] | None = Field(
        default=None, max_length=64,
        description="multitask: one task per column; multi_label: one 0/1 column per label (label = column name)")
    text_pair_column: ColumnName | None = Field(
        default=None, description="sentence pairs: the second text; both are encoded as one pair ([CLS] a [SEP] b [SEP])")
    tokens_column: ColumnName | None = Field(
        default=None, description='token classification: the column of each sentence\'s tokens, a JSON array of '
        'strings (default "tokens"; a CoNLL upload has it)')
    spans_column: ColumnName | None = Field(
        default=None, description='token classification from raw text: the column of each text\'s entity spans, a '
        'JSON array of {"start", "end", "label"} (character offsets into text_column), or a Label Studio export\'s '
        '"annotations" (its text column is "data"); the spans become word tags through the tokenizer\'s words')
    tags_column: ColumnName | None = Field(
        default=None, description='token classification: the column of each sentence\'s tags, one per token '
        '(default "tags")')
    context_column: ColumnName | None = Field(
        default=None, description='question answering: the column of the contexts the answers are spans of; '
        'multiple choice: the context column (default "context")')
    question_column: ColumnName | None = Field(
        default=None, description='question answering: the column of the questions (default "question"); '
        'multiple choice: a question or stem encoded after the context (default "question" when the dataset has '
        'it, as SWAG\'s sent2)')
    answers_column: ColumnName | None = Field(
        default=None, description='question answering: the column of the gold answers, {"text": [...], '
        '"answer_start": [...]} (character offsets; empty: unanswerable; default "answers"); CSV may give '
        'answer_text + answer_start columns instead')
    choice_columns: list[ColumnName] | None = Field(
        default=None, max_length=MAX_CHOICES, description='multiple choice: the numbered choice columns, in order '
        '(default every ending<N> column); a row may leave trailing ones empty')
    choices_column: ColumnName | None = Field(
        default=None, description='multiple choice: one column holding each row\'s choices as a JSON array of '
        'strings (instead of choice_columns)')
    text_template: Annotated[str | None, Opt("Text template", group="data")] = Field(
        default=None, max_length=1000,
        description='builds the text from several columns, e.g. "{speaker}: {text}" (replaces text_column)')
    multi_label: Annotated[bool, Opt("Multi-label (several labels per text)", group="data",
                                     families=MULTI_LABEL_FAMILIES, task_types=TEXT_CLASSIFICATION, model=True,
                                     why_not="multitask keeps single-label tasks")] = Field(
        default=False, description="each text may have several labels: sigmoid + BCE, a threshold per label")
    # not stripped: a tab or a space is a fine separator
    label_separator: Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=10),
                               Opt("Label separator (multi-label)", group="data",
                                   task_types=TEXT_CLASSIFICATION)] = Field(
        default="|",
        description="multi_label with one label column: what separates a cell's labels (an empty cell: no label)")
    stride: Annotated[int, Opt("Window overlap (tokens)", group="data", task_types=TOKEN_CLASSIFICATION)] = Field(
        default=32, ge=0, le=256, description="token classification: a sentence longer than max_length is split into "
        "windows sharing this many tokens (each word is scored once); must be less than max_length - 2")
    doc_stride: Annotated[int, Opt("Context window overlap (tokens)", group="data",
                                   task_types=QUESTION_ANSWERING)] = Field(
        default=128, ge=1, le=508, description="question answering: a context longer than max_length is split into "
        "windows sharing this many tokens; must be less than max_length minus the question and 3 special tokens")
    text_normalization: Annotated[Literal["none", "social"], Opt("Text normalization", group="data",
                                                                task_types=TEXT_CLASSIFICATION)] = Field(
        default="none", description='"social": user handles become "@user" and links "http" (as in TweetEval)')

    # ---- model
    family: Family = Field(default="bert", description="the model family")
    encoder: Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="pretrained encoder: local directory or hub id (default: the packaged MiniLM)")
    dropout: Annotated[float, Opt("Head dropout", group="model", model=True)] = Field(default=0.1, ge=0.0, le=0.9)
    freeze_encoder: Annotated[bool, Opt("Freeze encoder (train the head only)", group="model", model=True)] = False
    pooling: Annotated[Literal["pooler", "cls", "mean"] | None, Opt(
        "Pooling", group="model", families=("bert", "multitask"), task_types=TEXT_CLASSIFICATION, model=True)] = Field(
        default=None, description="how the encoder's tokens become one vector: pooler (dense + tanh over [CLS], as "
        "transformers' BertForSequenceClassification: such a model downloads as a plain Hugging Face checkpoint), "
        "cls or mean; null: the pooler when the encoder has one (the default MiniLM has), else the [CLS] token")
    lstm_hidden: Annotated[int, Opt("LSTM hidden size", group="model", families=("bert_lstm",), model=True)] = Field(
        default=256, ge=4, le=4096)
    bidirectional: Annotated[bool, Opt("Bidirectional LSTM", group="model", families=("bert_lstm",),
                                       model=True)] = True
    task_weights: Annotated[dict[str, Annotated[float, Field(ge=0)]] | None, Opt(
        "Task weights", group=None, families=("multitask",), task_types=TEXT_CLASSIFICATION, model=True)] = Field(
        default=None, description="multitask: loss weight per task (default 1 each)")

    # ---- optimisation
    # defaults measured on held-out tweets (bench/training_quality.py, bench/README.md); batch 32 at 1e-4 is the
    # linear-scaling equivalent of 16 at 5e-5 and faster on CPU; the best evaluation's checkpoint is the one saved
    epochs: Annotated[int, Opt("Epochs")] = Field(default=3, ge=1, le=100)
    batch_size: Annotated[int, Opt("Batch size")] = Field(default=32, ge=1, le=1024)
    learning_rate: Annotated[float, Opt("Learning rate")] = Field(default=1e-4, gt=0, le=1)
    encoder_lr: Annotated[float | None, Opt("Encoder learning rate")] = Field(
        default=None, gt=0, le=1, description="default: learning_rate")
    head_lr: Annotated[float | None, Opt("Head learning rate")] = Field(
        default=None, gt=0, le=1, description="default: 10 x learning_rate (the heads start from random weights)")
    layer_lr_decay: Annotated[float, Opt("Layer-wise LR decay")] = Field(
        default=1.0, gt=0, le=1, description="encoder layer i of L trains at encoder_lr x decay^(L-i); 1: off")
    max_length: Annotated[int, Opt("Max length (tokens)")] = Field(default=128, ge=8, le=512)
    warmup_ratio: Annotated[float, Opt("Warm-up ratio")] = Field(default=0.1, ge=0.0, le=0.5)
    weight_decay: Annotated[float, Opt("Weight decay")] = Field(default=0.01, ge=0.0, le=1.0)
    label_smoothing: Annotated[float, Opt("Label smoothing", model=True)] = Field(
        default=0.0, ge=0.0, le=0.5, description="single-label cross-entropy only")
    class_weights: Annotated[ClassWeights | None, Opt("Class weights", group=None)] = Field(
        default=None, description='"balanced", one weight per label (sorted label order) or {task: ...}')
    seed: Annotated[int, Opt("Seed")] = Field(default=42, ge=0, le=2**31 - 1)

    # ---- evaluation, early stopping
    validation_split: Annotated[float, Opt("Validation split", group="evaluation")] = Field(
        default=0.1, ge=0.0, le=0.5, description="held out when no validation_dataset_id is given")
    eval_steps: Annotated[int | None, Opt("Evaluate every N steps", group="evaluation")] = Field(
        default=None, ge=1, le=10_000_000, description="null: at the end of every epoch")
    early_stopping_patience: Annotated[int | None, Opt("Early-stopping patience (evaluations)", group="evaluation")] = Field(
        default=None, ge=1, le=1000, description="stop after this many evaluations without a better metric; null: off")
    metric: Annotated[Literal[METRICS], Opt("Metric for the best checkpoint", group="evaluation")] = Field(  # type: ignore[valid-type]
        default="macro_f1", description="what picks the saved (best) checkpoint and drives early stopping")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.text_template is not None:
            template_columns(self.text_template)  # raises ValueError naming the problem
        _check_task_type(self)
        _check_columns(self)
        _check_family_options(self)
        _check_weights(self)
        if self.label_smoothing and self.multi_label:
            raise ValueError("label_smoothing applies to single-label training, not multi_label")
        if self.label_separator != "|" and not (self.multi_label and len(self.label_columns) == 1):
            raise ValueError("label_separator applies to multi_label with one label column")
        return self

    def text_columns(self) -> list[str]:
        """Every column the texts are built from, as the task type says (``TaskType.text_columns``: text
        classification's text or template columns and pair column, a token model's tokens column, ...). What a
        dataset is read by is ``TaskType.dataset_columns``, which starts from these."""
        return task_types.get(self.task_type).text_columns(self)


class TrainRequest(TrainConfig):
    """Body of ``POST /api/v1/jobs/train``: a :class:`TrainConfig` plus where the data comes from."""

    model_config = {**StrictModel.model_config, "json_schema_extra": {"examples": [
        {"dataset_id": 1, "text_column": "text", "label_column": "label", "epochs": 1},
        {"dataset_id": 1, "text_column": "text", "label_column": "tags", "multi_label": True},
    ]}}

    dataset_id: SqlId
    validation_dataset_id: SqlId | None = Field(
        default=None, description="a labelled dataset to evaluate on, replacing the random validation split")
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="the model's name (default: family-dataset)")

    @model_validator(mode="after")
    def _validation_source(self) -> "TrainRequest":
        if self.early_stopping_patience is not None and not self.validation_split and self.validation_dataset_id is None:
            raise ValueError("early_stopping_patience needs validation data: a validation_split > 0 or a "
                             "validation_dataset_id")
        return self

    def config(self) -> TrainConfig:
        """The training configuration of this request (what the training loop reads)."""
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))


def option_fields(group: str | None = None) -> list[tuple[str, FieldInfo, Opt]]:
    """``(name, field, opt)`` of every declared option, in declaration order (only ``group``'s when given)."""
    out = []
    for name, field in TrainConfig.model_fields.items():
        meta = opt(field)
        if meta is not None and (group is None or meta.group == group):
            out.append((name, field, meta))
    return out


def task_type_defaults(name: str) -> dict[str, Any]:
    """``{task type: value}`` of the task types that train option ``name`` with a default of their own
    (``TaskType.training_defaults``) instead of the declared one."""
    return {t: task_types.get(t).training_defaults[name] for t in task_types.names()
            if name in task_types.get(t).training_defaults}


def applies(meta: Opt, family: str) -> bool:
    return meta.families is None or family in meta.families


def model_options(config: TrainConfig) -> dict[str, Any]:
    """The family options ``models.registry.build_model`` takes for ``config.family`` (class weights apart: the
    training code resolves "balanced" from the label counts first)."""
    return {name: getattr(config, name) for name, _, meta in option_fields() if meta.model and applies(meta, config.family)}


def task_names(config: TrainConfig) -> list[str]:
    """The tasks a model trained with ``config`` has: one per label column for multitask; one for every other
    family, named after its label column (multi-label over several 0/1 columns: ``labels``)."""
    if FAMILY_INFO[config.family].multitask:
        return list(config.label_columns)
    if config.multi_label and len(config.label_columns) > 1:
        return ["labels"]
    return [config.label_column]


def template_columns(template: str) -> list[str]:
    """The column names a text template uses, in order; ValueError for anything but plain ``{column}`` fields."""
    return list(_parse_template(template))


@functools.lru_cache(maxsize=256)
def _parse_template(template: str) -> tuple[str, ...]:
    # cached: training, evaluation and dataset classification render one template for every row
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"text_template is not a valid template: {exc}") from None
    columns: list[str] = []
    fields = [p for p in parsed if p[1] is not None]
    if len(fields) > MAX_TEMPLATE_FIELDS:  # each field copies a cell: bound what one row's text can grow to
        raise ValueError(f"text_template may use at most {MAX_TEMPLATE_FIELDS} fields, it has {len(fields)}")
    for _, name, spec, conversion in fields:
        if not name or name.isdigit():
            raise ValueError("text_template fields must name a column, e.g. {text}")
        if any(c in name for c in ".[]") or spec or conversion:
            raise ValueError(f"text_template field {{{name}}} may only name a column: no attribute, index, "
                             "conversion or format spec")
        if name not in columns:
            columns.append(name)
    if not columns:
        raise ValueError("text_template names no column: use {column} placeholders")
    return tuple(columns)


# ---------------------------------------------------------------------------------------------------- checks


def _check_columns(config: TrainConfig) -> None:
    """Resolve label_column / label_columns into ``label_columns`` and check they fit the family and task shape
    (a task type with columns of its own resolves them itself: ``TaskType.resolve_columns``)."""
    if task_types.get(config.task_type).resolve_columns(config):
        return
    if config.text_column is None and config.text_template is None:
        raise ValueError("give text_column (or a text_template)")
    if config.text_column is not None and config.text_template is not None:
        raise ValueError("give text_column or text_template, not both")
    columns = config.label_columns or ([config.label_column] if config.label_column else [])
    if not columns:
        raise ValueError("give label_column (or label_columns)")
    if config.label_columns and config.label_column and config.label_column != config.label_columns[0]:
        raise ValueError("give label_column or label_columns, not both")
    if len(set(columns)) != len(columns):
        raise ValueError("label_columns must not repeat a column")
    info = FAMILY_INFO[config.family]
    if info.multitask:
        if len(columns) < 2:
            raise ValueError("multitask needs label_columns with at least 2 columns (one per task)")
    elif len(columns) != 1 and not config.multi_label:
        raise ValueError(f"family {config.family!r} takes exactly one label column; use multitask for several "
                         "tasks, or multi_label with one 0/1 column per label")
    if config.text_pair_column is not None and config.text_pair_column == config.text_column:
        raise ValueError("text_pair_column must differ from text_column")
    config.label_columns, config.label_column = columns, columns[0]


# the data fields (not options) a task type may not read: refused when set for a task type whose
# ``request_fields`` lack them
_DATA_FIELDS = ("text_column", "text_template", "text_pair_column", "label_column", "label_columns", "tokens_column",
                "tags_column", "spans_column", "context_column", "question_column", "answers_column", "choice_columns",
                "choices_column")


def _check_task_type(config: TrainConfig) -> None:
    """Every data field set and every option set to a value other than its default (or null) must apply to the
    chosen task type (``core.task_types``: its ``request_fields``, an option's ``Opt.task_types``), and ``metric``
    must be one the task type reports."""
    kind = task_types.get(config.task_type)
    if kind.families is not None and config.family not in kind.families:
        raise ValueError(f"the {kind.name} task type trains the {', '.join(kind.families)} families, not "
                         f"{config.family!r}")
    if "metric" not in config.model_fields_set:
        config.metric = kind.default_metric  # each task type picks its checkpoints by its own headline metric
    for name, value in kind.training_defaults.items():
        if name not in config.model_fields_set:
            setattr(config, name, value)
    for name in _DATA_FIELDS:
        if getattr(config, name) is not None and name not in kind.request_fields:
            raise ValueError(f"{name} does not apply to the {kind.name} task type")
    for name, field, meta in option_fields():
        value = getattr(config, name)
        if meta.task_types is None or kind.name in meta.task_types or value is None or value == field.default:
            continue
        raise ValueError(f"{name} applies to the {' and '.join(meta.task_types)} task type"
                         f"{'s' if len(meta.task_types) > 1 else ''}, not {kind.name!r}")
    if config.metric not in kind.metrics:
        raise ValueError(f"metric {config.metric!r} is not one the {kind.name} task type reports: "
                         f"{', '.join(kind.metrics)}")


def _check_family_options(config: TrainConfig) -> None:
    """An option set to a value other than its default (or null) must apply to the chosen family.

    Null always passes: requests stored before a default changed hold null for options of other families."""
    for name, field, meta in option_fields():
        value = getattr(config, name)
        if applies(meta, config.family) or value is None or value == field.default:
            continue
        *others, last = meta.families or ("",)
        where = f"{', '.join(others)} and {last} families" if others else f"{last} family"
        why = f" ({meta.why_not})" if meta.why_not else ""
        raise ValueError(f"{name} applies to the {where}, not {config.family!r}{why}")


def _check_weights(config: TrainConfig) -> None:
    """Class and task weights name known tasks and hold usable numbers (their lengths are checked against the
    data's labels by the training code, which alone knows them)."""
    tasks = task_names(config)
    if config.task_weights is not None:
        unknown = set(config.task_weights) - set(tasks)
        if unknown:
            raise ValueError(f"task_weights names unknown tasks: {', '.join(sorted(unknown))}")
    weights = config.class_weights
    if isinstance(weights, list) and FAMILY_INFO[config.family].multitask:
        raise ValueError("for multitask give class_weights as {task: [weights]} or 'balanced'")
    if isinstance(weights, dict):
        unknown = set(weights) - set(tasks)
        if unknown:
            raise ValueError(f"class_weights names unknown tasks: {', '.join(sorted(unknown))}")
    lists = [weights] if isinstance(weights, list) else [w for w in (weights or {}).values() if isinstance(w, list)] \
        if isinstance(weights, dict) else []
    for values in lists:
        if not values or not any(w > 0 for w in values) or not all(math.isfinite(w) for w in values):
            raise ValueError("class_weights must be finite numbers >= 0, not all 0")
