"""Request and job-parameter models, shared by the web (validation) and the worker (reading params).

A train job's ``params`` column holds ``TrainRequest.model_dump()``; a classify job stores
``ClassifyRequest.job_params()`` (small params + the texts as ``inputs``). Either way the worker reads back exactly
what the web validated.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .schema import TOKEN_NAME_MAX, USERNAME_MAX

FAMILIES = ("bert", "distilbert", "bert_lstm", "multitask")
Family = Literal["bert", "distilbert", "bert_lstm", "multitask"]

ColumnName = Annotated[str, Field(min_length=1, max_length=200)]

# SQL ids are BIGINT on PostgreSQL: anything larger is not an id and must be a 4xx, not a database error.
MAX_SQL_ID = 2**63 - 1
SqlId = Annotated[int, Field(ge=1, le=MAX_SQL_ID, strict=True)]  # strict: true is not the id 1


def _field_error(field: str | tuple, message: str, *, title: str = "ClassifyRequest", kind: str = "invalid_source"):
    """A validation error that names ``field`` (a model-level check would otherwise report no field)."""
    loc = field if isinstance(field, tuple) else (field,)
    return ValidationError.from_exception_data(
        title, [InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=None)]
    )


def _nul_path(value: Any, path: tuple = ()) -> tuple | None:
    """Where the first string (value or key) holding a NUL character is in ``value``, or None.

    Iterative, so a deeply nested value cannot exhaust the stack.
    """
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return (*where, key)
                stack.append((child, (*where, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, (*where, i)) for i, child in reversed(list(enumerate(item))))
    return None


class _Strict(BaseModel):
    """Base of every request model: unknown fields, NUL characters and NaN/Infinity are rejected.

    SQL text columns cannot hold NUL (PostgreSQL refuses it) and PostgreSQL's JSON rejects NaN/Infinity, so
    neither may reach a job's params, a name or a label.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = _nul_path(data) if isinstance(data, dict) else None
        if where is not None:
            raise _field_error(where, "must not contain a NUL character", title=cls.__name__, kind="nul_character")
        return data


class TrainRequest(_Strict):
    """Body of ``POST /api/v1/jobs/train``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"dataset_id": 1, "text_column": "text", "label_column": "label", "epochs": 1}]}
    )

    dataset_id: SqlId
    text_column: ColumnName
    label_column: ColumnName | None = None
    label_columns: list[ColumnName] | None = Field(default=None, max_length=16)
    family: Family = "bert"
    encoder: Annotated[str, Field(max_length=500)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    epochs: int = Field(default=3, ge=1, le=100)
    batch_size: int = Field(default=16, ge=1, le=1024)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    max_length: int = Field(default=128, ge=8, le=512)
    validation_split: float = Field(default=0.1, ge=0.0, le=0.5)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    warmup_ratio: float = Field(default=0.1, ge=0.0, le=0.5)
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    dropout: float = Field(default=0.1, ge=0.0, le=0.9)
    # family options
    lstm_hidden: int = Field(default=256, ge=4, le=4096)
    bidirectional: bool = True
    encoder_lr: float | None = Field(default=None, gt=0, le=1)
    head_lr: float | None = Field(default=None, gt=0, le=1)
    class_weights: Literal["balanced"] | list[float] | dict[str, list[float]] | None = None
    freeze_encoder: bool = False
    task_weights: dict[str, Annotated[float, Field(ge=0)]] | None = None
    pooling: Literal["pooler", "cls", "mean"] | None = None  # bert and multitask; default: pooler when present

    @model_validator(mode="after")
    def _label_columns(self) -> "TrainRequest":
        columns = self.label_columns or ([self.label_column] if self.label_column else [])
        if not columns:
            raise ValueError("give label_column (or label_columns for multitask)")
        if len(set(columns)) != len(columns):
            raise ValueError("label_columns must not repeat a column")
        if self.family == "multitask":
            if len(columns) < 2:
                raise ValueError("multitask needs label_columns with at least 2 columns (one per task)")
        elif len(columns) != 1:
            raise ValueError(f"family {self.family!r} takes exactly one label column; use multitask for several")
        self.label_columns, self.label_column = columns, columns[0]
        if self.task_weights is not None:
            unknown = set(self.task_weights) - set(columns)
            if unknown:
                raise ValueError(f"task_weights names unknown tasks: {', '.join(sorted(unknown))}")
        if isinstance(self.class_weights, dict):
            unknown = set(self.class_weights) - set(columns)
            if unknown:
                raise ValueError(f"class_weights names unknown tasks: {', '.join(sorted(unknown))}")
        if self.pooling is not None and self.family not in ("bert", "multitask"):
            raise ValueError(f"pooling applies to the bert and multitask families, not {self.family!r}")
        if isinstance(self.class_weights, list) and self.family == "multitask":
            raise ValueError("for multitask give class_weights as {task: [weights]} or 'balanced'")
        return self


class _ServingOptions(_Strict):
    """What every classification request shares: the model and how to run it."""

    # texts are kept exactly as sent (no whitespace stripping): predictions echo them back
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    model_id: SqlId
    # int8 dynamic quantization of the model's Linear layers (CPU); None: the deployment's default
    quantize: bool | None = None

    @field_validator("texts", check_fields=False)
    @classmethod
    def _texts(cls, texts: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if texts is None:
            return None
        context = info.context or {}
        max_texts = context.get("max_texts", 10_000)
        max_chars = context.get("max_text_chars", 20_000)
        if len(texts) > max_texts:
            raise ValueError(f"at most {max_texts} texts per request, got {len(texts)}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty")
            if len(text) > max_chars:
                raise ValueError(f"texts[{i}] has {len(text)} characters; the limit is {max_chars}")
        return texts


class ClassifyRequest(_ServingOptions):
    """Body of ``POST /api/v1/jobs/classify``: either ``texts``, or a stored dataset and its text column.

    Validate with ``context={"max_texts": ..., "max_text_chars": ...}`` to apply the deployment's limits.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_id": 1, "texts": ["great movie", "awful plot"]},
        {"model_id": 1, "dataset_id": 1, "text_column": "text"},
    ]})

    texts: list[str] | None = Field(default=None, min_length=1)
    dataset_id: SqlId | None = None
    text_column: ColumnName | None = None
    id_column: ColumnName | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ClassifyRequest":
        if self.texts is not None and self.dataset_id is not None:
            raise _field_error("dataset_id", "give either texts or dataset_id (with text_column), not both")
        if self.texts is None and self.dataset_id is None:
            raise _field_error("texts", "give texts, or dataset_id with text_column")
        if self.dataset_id is not None and self.text_column is None:
            raise _field_error("text_column", "text_column is required with dataset_id")
        if self.texts is not None and (self.text_column is not None or self.id_column is not None):
            raise ValueError("text_column and id_column go with dataset_id, not with texts")
        if self.id_column is not None and self.id_column == self.text_column:
            raise ValueError("id_column must differ from text_column")
        return self

    @property
    def from_dataset(self) -> bool:
        return self.dataset_id is not None

    @classmethod
    def from_job_params(cls, params: dict, inputs: list[str] | None = None) -> "ClassifyRequest":
        """Read a stored job (params + inputs), already validated under the deployment's limits when created."""
        data = {k: params[k] for k in ("model_id", "dataset_id", "text_column", "id_column", "quantize") if params.get(k) is not None}
        if "dataset_id" not in data:
            data["texts"] = inputs if inputs is not None else params.get("texts")
        return cls.model_validate(data, context={"max_texts": 2**63, "max_text_chars": 2**63})

    def job_params(self, preview: int = 3, preview_chars: int = 200, *, row_count: int | None = None) -> tuple[dict, list[str] | None]:
        """(params, inputs) to store for this request: small params for display, the texts (if any) as inputs."""
        params: dict = {"model_id": self.model_id}
        if self.quantize is not None:
            params["quantize"] = self.quantize
        if self.from_dataset:
            params.update(dataset_id=self.dataset_id, text_column=self.text_column, text_count=row_count)
            if self.id_column is not None:
                params["id_column"] = self.id_column
            return params, None
        params.update(text_count=len(self.texts), texts_preview=[t[:preview_chars] for t in self.texts[:preview]])
        return params, list(self.texts)


class ModelServingUpdate(_Strict):
    """Body of ``PATCH /api/v1/models/<id>``: the model's serving defaults (null: follow the deployment)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"quantize": True}]})

    quantize: bool | None = None


class PredictRequest(_ServingOptions):
    """Body of ``POST /api/v1/predict``: texts classified by a job that the caller waits for."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model_id": 1, "texts": ["great movie", "awful plot"], "timeout_s": 5}]}
    )

    texts: list[str] = Field(min_length=1)
    timeout_s: float | None = Field(default=None, ge=0, le=300, allow_inf_nan=False)

    from_dataset: ClassVar[bool] = False  # predict takes texts only

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
