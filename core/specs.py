"""Request and job-parameter models, shared by the web (validation) and the worker (reading params).

A train job's ``params`` column holds ``TrainRequest.model_dump()``; a classify job stores
``ClassifyRequest.job_params()`` (small params + the texts or pairs as ``inputs``); an evaluate job stores the
columns its service resolved against the model (``EvaluateRequest`` fields). Either way the worker reads back
exactly what the web validated.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .models_registry import REF_MAX, ModelRefError, parse_model_ref

from .options import FAMILIES, Family, TaskTypeName, TrainConfig, TrainRequest  # noqa: F401  (re-exported: one import place)
from .options import template_columns
from .task_types.multiple_choice import MAX_CHOICES, MIN_CHOICES
from .schema import TOKEN_NAME_MAX, USERNAME_MAX
from .validation import MAX_SQL_ID, ColumnName, SqlId  # noqa: F401  (re-exported)
from .validation import StrictModel as _Strict
from .validation import field_error as _field_error

# a sentence pair for a model trained with a text_pair_column: [text, text_pair]
TextPair = Annotated[list[str], Field(min_length=2, max_length=2)]
PAIRS = "pairs"  # a classify job's ``params["input_kind"]`` when its inputs are pairs, not texts
TOKENS = "tokens"  # ... when its inputs are pre-tokenized sentences (token classification)
CHOICE_QUESTIONS = "choice_questions"  # ... when its inputs are multiple-choice questions
QUESTIONS = "questions"  # ... when its inputs are questions about contexts (question answering)
# a pre-tokenized sentence: at least one word (each checked like a text by the limits validator)
TokenList = Annotated[list[str], Field(min_length=1)]
AggregationStrategy = Literal["none", "simple", "first", "average", "max"]
AGGREGATION_DESCRIPTION = (
    "token models, raw texts: how sub-word predictions become entities, as in the transformers token-classification "
    "pipeline: first (default: each word takes its first sub-token's tag), average, max, simple (per token, then "
    "grouped) or none (one entry per token)")


class ChoiceQuestion(_Strict):
    """One multiple-choice input: a context, an optional question (encoded before each choice, as SWAG's
    ``sent2``) and 2 to 32 choices; each text within the deployment's limits like any other."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    context: str
    question: str | None = None
    choices: list[str] = Field(min_length=MIN_CHOICES, max_length=MAX_CHOICES)


CHOICE_QUESTIONS_DESCRIPTION = ('multiple-choice models only: {"context", "question"?, "choices": [2 to '
                                f'{MAX_CHOICES} texts]}} per input')
class Question(_Strict):
    """A question about a context, for a question-answering model (the answer is a span of the context)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    question: str
    context: str

    def texts(self) -> list[str]:
        return [self.question, self.context]


QUESTIONS_DESCRIPTION = "question-answering models only: [{\"question\", \"context\"}] per input"


MODEL_REF_DESCRIPTION = (
    "the model by name instead of `model_id`: `NAME` (its latest version that is not deleted) or `NAME:VERSION`; "
    "names are looked up among the caller's own models; give exactly one of `model` and `model_id`"
)


def _check_model_ref(value: str) -> str:
    try:
        parse_model_ref(value)
    except ModelRefError as exc:
        raise ValueError(str(exc)) from None
    return value


# NAME or NAME:VERSION (core.models_registry.parse_model_ref), kept as sent: the service resolves it to an id
ModelRefText = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=REF_MAX),
                         AfterValidator(_check_model_ref)]


def _require_one_model(request):
    """Exactly one of ``model_id`` and ``model``."""
    if request.model_id is not None and request.model is not None:
        raise _field_error("model", "give model_id or model, not both", title=type(request).__name__)
    if request.model_id is None and request.model is None:
        raise _field_error("model_id", "give model_id, or model as NAME or NAME:VERSION", title=type(request).__name__)
    return request


class _ServingOptions(_Strict):
    """What every classification request shares: the model and how to run it."""

    # texts are kept exactly as sent (no whitespace stripping): predictions echo them back
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    model_id: SqlId | None = Field(default=None, description="the model's id (or give `model`)")
    model: ModelRefText | None = Field(default=None, description=MODEL_REF_DESCRIPTION)
    # int8 dynamic quantization of the model's Linear layers (CPU); None: the deployment's default
    quantize: bool | None = None
    # question-answering models: how many answers per question, and how long (tokens) an answer may be
    top_k: int | None = Field(default=None, ge=1, le=20, description="question-answering models: the best answers "
                              "returned per question (default 1)")
    max_answer_length: int | None = Field(default=None, ge=1, le=512, description="question-answering models: the "
                                          "longest answer in tokens (default 30)")

    @model_validator(mode="after")
    def _one_model(self):
        return _require_one_model(self)

    def with_model_id(self, model_id: int):
        """A copy naming the model by its resolved id only: job params carry ids, never references."""
        return self.model_copy(update={"model_id": model_id, "model": None})

    @field_validator("texts", "pairs", "tokens", "questions", check_fields=False)
    @classmethod
    def _within_limits(cls, value: list | None, info: ValidationInfo) -> list | None:
        """Texts (or pairs of texts) within the deployment's limits: count, emptiness, characters per text."""
        if value is None:
            return None
        context = info.context or {}
        max_texts = context.get("max_texts", 10_000)
        max_chars = context.get("max_text_chars", 20_000)
        if len(value) > max_texts:
            raise ValueError(f"at most {max_texts} {info.field_name} per request, got {len(value)}")
        for i, item in enumerate(value):
            single = isinstance(item, str)
            for j, text in enumerate([item] if single else item.texts() if isinstance(item, Question) else item):
                where = f"{info.field_name}[{i}]" + ("" if single else f"[{j}]")
                if not text.strip():
                    raise ValueError(f"{where} is empty")
                if len(text) > max_chars:
                    raise ValueError(f"{where} has {len(text)} characters; the limit is {max_chars}")
        return value

    @field_validator("choice_questions", check_fields=False)
    @classmethod
    def _choices_within_limits(cls, value: list | None, info: ValidationInfo) -> list | None:
        """Multiple-choice inputs within the same limits: count, and every context, question and choice a text
        that is not empty and not too long (an absent question is fine)."""
        if value is None:
            return None
        context = info.context or {}
        max_texts, max_chars = context.get("max_texts", 10_000), context.get("max_text_chars", 20_000)
        if len(value) > max_texts:
            raise ValueError(f"at most {max_texts} choice_questions per request, got {len(value)}")
        for i, item in enumerate(value):
            texts = [("context", item.context), *([("question", item.question)] if item.question is not None else []),
                     *((f"choices[{j}]", c) for j, c in enumerate(item.choices))]
            for where, text in texts:
                if not text.strip() or "\x00" in text:
                    raise ValueError(f"choice_questions[{i}].{where} is empty or holds a NUL character")
                if len(text) > max_chars:
                    raise ValueError(f"choice_questions[{i}].{where} has {len(text)} characters; the limit is "
                                     f"{max_chars}")
        return value

    @property
    def with_choice_questions(self) -> bool:
        """Whether the inputs are multiple-choice questions."""
        return getattr(self, "choice_questions", None) is not None

    @property
    def with_tokens(self) -> bool:
        """Whether the inputs are pre-tokenized sentences (token classification)."""
        return getattr(self, "tokens", None) is not None

    @property
    def with_pairs(self) -> bool:
        """Whether the inputs are sentence pairs (``pairs``, ``questions`` about contexts, or a dataset's
        ``text_pair_column``)."""
        return any(getattr(self, name, None) is not None for name in ("pairs", "questions", "text_pair_column"))

    @property
    def with_questions(self) -> bool:
        """Whether the inputs are questions about contexts (question answering)."""
        return getattr(self, "questions", None) is not None

    def result_options(self) -> dict:
        """How the backend reads results (``results(..., **options)``): the options given, for the task types that
        take them (a token model's ``aggregation_strategy``; a QA model's ``top_k``, ``max_answer_length``)."""
        names = ("aggregation_strategy", "top_k", "max_answer_length")
        return {name: getattr(self, name) for name in names if getattr(self, name, None) is not None}


class ClassifyRequest(_ServingOptions):
    """Body of ``POST /api/v1/jobs/classify``: ``texts``, ``pairs`` (a model trained on sentence pairs), or a
    stored dataset: its ``text_column`` or a ``text_template`` (and ``text_pair_column`` for a pair model), each
    by default the model's own (filled in by the service, which knows the model).

    Validate with ``context={"max_texts": ..., "max_text_chars": ...}`` to apply the deployment's limits.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "texts": ["great movie", "awful plot"]},
        {"model": "sentiment", "texts": ["great movie"]},
        {"model_id": 1, "dataset_id": 1, "text_column": "text"},
        {"model_id": 2, "pairs": [["A man plays a guitar.", "Someone makes music."]]},
    ]})

    texts: list[str] | None = Field(default=None, min_length=1)
    pairs: list[TextPair] | None = Field(
        default=None, min_length=1, description="pair models only: [text, text_pair] per input")
    tokens: list[TokenList] | None = Field(
        default=None, min_length=1, description="token models only: pre-tokenized sentences, a list of words each")
    choice_questions: list[ChoiceQuestion] | None = Field(
        default=None, min_length=1, description=CHOICE_QUESTIONS_DESCRIPTION)
    questions: list[Question] | None = Field(default=None, min_length=1, description=QUESTIONS_DESCRIPTION)
    aggregation_strategy: AggregationStrategy | None = Field(
        default=None, description=AGGREGATION_DESCRIPTION)
    dataset_id: SqlId | None = None
    text_column: ColumnName | None = Field(
        default=None, description="with dataset_id: the text column (default: the model's text column or template)")
    text_template: str | None = Field(
        default=None, max_length=1000,
        description='with dataset_id: builds the text from several columns, e.g. "{speaker}: {text}"')
    text_pair_column: ColumnName | None = Field(default=None, description="pair models: the dataset's second text")
    id_column: ColumnName | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ClassifyRequest":
        given = [name for name in ("texts", "pairs", "tokens", "questions", "choice_questions", "dataset_id")
                 if getattr(self, name) is not None]
        if len(given) > 1:
            raise _field_error(given[1], f"give one of texts, pairs, tokens, questions, choice_questions or "
                               f"dataset_id, not {' and '.join(given)}")
        if not given:
            raise _field_error("texts", "give texts, pairs, tokens, questions, choice_questions, or dataset_id (with "
                               "text_column)")
        if self.dataset_id is None and any(c is not None for c in (self.text_column, self.text_template,
                                                                   self.text_pair_column, self.id_column)):
            raise ValueError("text_column, text_template, text_pair_column and id_column go with dataset_id, "
                             "not with texts or pairs")
        if self.text_column is not None and self.text_template is not None:
            raise _field_error("text_template", "give text_column or text_template, not both")
        if self.text_template is not None:
            try:
                template_columns(self.text_template)
            except ValueError as exc:
                raise _field_error("text_template", str(exc)) from None
        if self.id_column is not None and self.id_column == self.text_column:
            raise ValueError("id_column must differ from text_column")
        if self.text_pair_column is not None and self.text_pair_column in (self.text_column, self.id_column):
            raise ValueError("text_pair_column must differ from text_column and id_column")
        return self

    @property
    def from_dataset(self) -> bool:
        return self.dataset_id is not None

    def dataset_columns(self) -> list[str]:
        """The dataset columns this request reads: the text column (or the template's), the pair and id columns."""
        texts = template_columns(self.text_template) if self.text_template is not None else [self.text_column]
        return [c for c in (*texts, self.text_pair_column, self.id_column) if c is not None]

    @classmethod
    def from_job_params(cls, params: dict, inputs: list[str] | None = None) -> "ClassifyRequest":
        """Read a stored job (params + inputs), already validated under the deployment's limits when created."""
        keys = ("model_id", "dataset_id", "text_column", "text_template", "text_pair_column", "id_column", "quantize",
                "aggregation_strategy", "top_k", "max_answer_length")
        data = {k: params[k] for k in keys if params.get(k) is not None}
        if "dataset_id" not in data:
            source = params.get("input_kind") if params.get("input_kind") in (PAIRS, TOKENS, QUESTIONS,
                                                                          CHOICE_QUESTIONS) else "texts"
            data[source] = inputs if inputs is not None else params.get("texts")
            if source == QUESTIONS:  # stored as [question, context] pairs
                data[source] = [{"question": q, "context": c} for q, c in data[source]]
        return cls.model_validate(data, context={"max_texts": 2**63, "max_text_chars": 2**63})

    def job_params(self, preview: int = 3, preview_chars: int = 200, *, row_count: int | None = None) -> tuple[dict, list | None]:
        """(params, inputs) to store for this request: small params for display, the texts or pairs (if any) as
        inputs."""
        params: dict = {"model_id": self.model_id}
        if self.quantize is not None:
            params["quantize"] = self.quantize
        params.update(self.result_options())
        if self.from_dataset:
            params.update(dataset_id=self.dataset_id, text_count=row_count)
            for key in ("text_column", "text_template", "text_pair_column", "id_column"):
                if getattr(self, key) is not None:
                    params[key] = getattr(self, key)
            return params, None
        if self.pairs is not None:
            params.update(input_kind=PAIRS, text_count=len(self.pairs),
                          pairs_preview=[[a[:preview_chars], b[:preview_chars]] for a, b in self.pairs[:preview]])
            return params, [list(pair) for pair in self.pairs]
        if self.questions is not None:
            params.update(input_kind=QUESTIONS, text_count=len(self.questions),
                          texts_preview=[q.question[:preview_chars] for q in self.questions[:preview]])
            return params, [q.texts() for q in self.questions]
        if self.tokens is not None:
            params.update(input_kind=TOKENS, text_count=len(self.tokens),
                          texts_preview=[" ".join(words)[:preview_chars] for words in self.tokens[:preview]])
            return params, [list(words) for words in self.tokens]
        if self.choice_questions is not None:
            params.update(input_kind=CHOICE_QUESTIONS, text_count=len(self.choice_questions),
                          texts_preview=[q.context[:preview_chars] for q in self.choice_questions[:preview]])
            return params, [q.model_dump(exclude_none=True) for q in self.choice_questions]
        params.update(text_count=len(self.texts), texts_preview=[t[:preview_chars] for t in self.texts[:preview]])
        return params, list(self.texts)


EVALUATION_TASK_COLUMNS = ("context_column", "question_column", "answers_column")  # see EvaluateRequest.task_columns


class EvaluateRequest(_Strict):
    """Body of ``POST /api/v1/jobs/evaluate``: score a saved model on a labelled dataset.

    Columns left out default to those the model was trained on; label columns must match the model's task shape
    (one label column; a multitask model's tasks; a multi-label model's one column or one 0/1 column per label).
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "dataset_id": 1, "text_column": "text", "label_column": "label"},
        {"model": "sentiment:2", "dataset_id": 1},
    ]})

    model_id: SqlId | None = Field(default=None, description="the model's id (or give `model`)")
    model: ModelRefText | None = Field(default=None, description=MODEL_REF_DESCRIPTION)
    dataset_id: SqlId
    text_column: ColumnName | None = Field(default=None, description="default: the model's text column (or template)")
    text_pair_column: ColumnName | None = Field(default=None, description="pair models: the second text's column")
    label_column: ColumnName | None = Field(default=None, description="default: the model's label column(s)")
    label_columns: list[ColumnName] | None = Field(
        default=None, min_length=1, max_length=64, description="multitask: its task names; multi-label: 0/1 columns")
    # the columns of task types with inputs of their own (a model of another task type refuses them: 422)
    context_column: ColumnName | None = Field(
        default=None, description="question answering and multiple choice: the contexts' column (default: the model's)")
    question_column: ColumnName | None = Field(
        default=None, description="question answering and multiple choice: the questions' column (default: the "
        "model's)")
    answers_column: ColumnName | None = Field(
        default=None, description="question answering: the gold answers' column (default: the model's)")
    # int8 dynamic quantization (CPU), to measure what serving it quantized would score; None: the default
    quantize: bool | None = None

    def task_columns(self) -> dict[str, str]:
        """The columns given that only some task types read (``{field: column}``): what the model's task type must
        take (its ``request_fields``) and plans its evaluation by."""
        return {name: getattr(self, name) for name in EVALUATION_TASK_COLUMNS if getattr(self, name) is not None}

    @model_validator(mode="after")
    def _one_model(self) -> "EvaluateRequest":
        return _require_one_model(self)

    def with_model_id(self, model_id: int) -> "EvaluateRequest":
        """A copy naming the model by its resolved id only: job params carry ids, never references."""
        return self.model_copy(update={"model_id": model_id, "model": None})

    @model_validator(mode="after")
    def _columns(self) -> "EvaluateRequest":
        if self.label_column is not None and self.label_columns is not None:
            raise _field_error("label_columns", "give label_column or label_columns, not both", title="EvaluateRequest")
        labels = self.label_columns or ([self.label_column] if self.label_column else [])
        if len(set(labels)) != len(labels):
            raise ValueError("label_columns must not repeat a column")
        texts = [c for c in (self.text_column, self.text_pair_column) if c is not None]
        if len(set(texts)) != len(texts):
            raise ValueError("text_pair_column must differ from text_column")
        both = set(texts) & set(labels)
        if both:
            raise ValueError(f"column {sorted(both)[0]!r} cannot be both a text and a label column")
        return self


class ModelServingUpdate(_Strict):
    """Body of ``PATCH /api/v1/models/<id>``: the model's serving defaults (null: follow the deployment)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"quantize": True}]})

    quantize: bool | None = None


class PredictRequest(_ServingOptions):
    """Body of ``POST /api/v1/predict``: texts (or pairs, for a pair model) classified by a job that the caller
    waits for."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "texts": ["great movie", "awful plot"], "timeout_s": 5},
        {"model": "sentiment:2", "texts": ["great movie"]},
        {"model_id": 2, "pairs": [["A man plays a guitar.", "Someone makes music."]]},
    ]})

    texts: list[str] | None = Field(default=None, min_length=1)
    pairs: list[TextPair] | None = Field(
        default=None, min_length=1, description="pair models only: [text, text_pair] per input")
    tokens: list[TokenList] | None = Field(
        default=None, min_length=1, description="token models only: pre-tokenized sentences, a list of words each")
    choice_questions: list[ChoiceQuestion] | None = Field(
        default=None, min_length=1, description=CHOICE_QUESTIONS_DESCRIPTION)
    questions: list[Question] | None = Field(default=None, min_length=1, description=QUESTIONS_DESCRIPTION)
    aggregation_strategy: AggregationStrategy | None = Field(
        default=None, description=AGGREGATION_DESCRIPTION)
    timeout_s: float | None = Field(default=None, ge=0, le=300, allow_inf_nan=False)

    from_dataset: ClassVar[bool] = False  # predict takes texts or pairs only

    @model_validator(mode="after")
    def _one_source(self) -> "PredictRequest":
        if sum(x is not None for x in (self.texts, self.pairs, self.tokens, self.questions,
                                       self.choice_questions)) != 1:
            raise _field_error("texts", "give one of texts, pairs (for a model trained on sentence pairs), tokens "
                               "(pre-tokenized sentences, for a token model), questions ({question, context}, "
                               "for a question-answering model) or choice_questions (for a multiple-choice model)",
                               title="PredictRequest")
        return self

    def job_params(self, preview: int = 3, preview_chars: int = 200) -> tuple[dict, list[str]]:
        """As :meth:`ClassifyRequest.job_params` (``timeout_s`` is not stored: it is the caller's, not the job's)."""
        data = self.model_dump(exclude={"timeout_s"}, exclude_none=True)
        return ClassifyRequest.model_validate(data, context={"max_texts": 2**63, "max_text_chars": 2**63}).job_params(
            preview, preview_chars
        )


# ---------------------------------------------------------------- accounts

USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]+$"


class UserCreate(_Strict):
    """Body of ``POST /api/v1/users`` (admins only). Without a password the user has API tokens only."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "ann", "password": "correct horse battery", "is_admin": False}]}
    )

    username: Annotated[str, Field(min_length=1, max_length=USERNAME_MAX, pattern=USERNAME_PATTERN)]
    # kept exactly as typed: leading or trailing spaces are part of a password
    password: Annotated[str, StringConstraints(strip_whitespace=False, min_length=8, max_length=256)] | None = None
    is_admin: StrictBool = False  # strict: "yes" or 1 must not make an admin by accident

    @field_validator("username")
    @classmethod
    def _not_only_digits(cls, value: str) -> str:
        # the CLI takes "id or username": an all-digit name would be read as someone else's id
        if value.isdigit():
            raise ValueError("a username needs at least one character that is not a digit")
        return value


class TokenCreate(_Strict):
    """Body of ``POST /api/v1/tokens``: a name for the caller's new API token."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "laptop"}]})

    name: Annotated[str, Field(min_length=1, max_length=TOKEN_NAME_MAX)]
