"""Pydantic models of the API's query strings and of the dataset upload form.

``@documented(query=...)`` (``web.api.apidoc``) validates a route's query string with one of these models and
``web.openapi`` writes the route's query parameters from the same model, so a bound or an enum in the document is
exactly the one enforced. Request bodies are modelled in ``core.specs``, responses in ``web.schemas``.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from werkzeug.datastructures import FileStorage

from core.specs import MAX_SQL_ID

from .exports import FORMATS
from .schemas import JobStatusName, JobTypeName

ExportFormat = Literal[tuple(FORMATS)]  # type: ignore[valid-type]

# a filter on a SQL id: 0 is allowed (it matches nothing) but nothing past a BIGINT
IdFilter = Annotated[int, Field(ge=0, le=MAX_SQL_ID, json_schema_extra={"format": "int64"})]


class QueryModel(BaseModel):
    """Base of the query-string models (see ``web.api.request_args.query_args``): each field is one parameter,
    given at most once; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _page(default: int, maximum: int):
    return Field(default=default, ge=1, le=maximum, description="page size")


class Page(QueryModel):
    """``limit`` and ``offset`` of a list, newest first."""

    limit: int = _page(100, 1000)
    offset: IdFilter = Field(default=0, description="items to skip")


def _strict_bool(value: object) -> object:
    """``true`` or ``false`` exactly (any case), nothing else pydantic would read as a boolean (``1``, ``yes``...)."""
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return value.lower() == "true"
    return value


QueryBool = Annotated[bool, BeforeValidator(_strict_bool)]


class ModelListQuery(Page):
    """``GET /api/v1/models``: paging, one name's versions, deleted models."""

    name: str | None = Field(
        default=None, max_length=200,
        description="only the models of this name: its versions, newest (highest) first. Empty: no filter",
    )
    include_deleted: QueryBool = Field(
        default=False, description="true: list deleted models too (their `deleted_at` is set)")

    @field_validator("name")
    @classmethod
    def _empty_is_no_filter(cls, name: str | None) -> str | None:
        return name or None


class JobListQuery(Page):
    """``GET /api/v1/jobs``: filters and paging."""

    limit: int = _page(50, 500)
    status: JobStatusName | None = Field(default=None, description="filter by status")
    type: JobTypeName | None = Field(default=None, description="filter by type")
    model_id: IdFilter | None = Field(default=None, description="filter by model")
    dataset_id: IdFilter | None = Field(default=None, description="filter by dataset")


class PredictionQuery(Page):
    """``GET /api/v1/jobs/<id>/predictions``."""

    label: str | None = Field(
        default=None,
        description="only predictions of this label (multitask: the first task's label; multi-label: any of the "
        "predicted labels); total counts the matching ones. Empty: no filter",
    )

    @field_validator("label")
    @classmethod
    def _empty_is_no_filter(cls, label: str | None) -> str | None:
        return label or None


class ExportQuery(QueryModel):
    """``GET /api/v1/jobs/<id>/export``."""

    format: ExportFormat = Field(default="csv", description="csv (default), jsonl, or conll (token-classification "
                                 "jobs: token<TAB>tag lines, a blank line between predictions)")


# A multipart file part: werkzeug's FileStorage, documented as binary content.
UploadedFile = Annotated[FileStorage, WithJsonSchema({"type": "string", "format": "binary"})]


class DatasetUpload(BaseModel):
    """The multipart/form-data body of ``POST /api/v1/datasets``."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    file: UploadedFile = Field(description="the CSV, TSV, JSON or JSONL file")
    name: str = Field(
        default="", max_length=200, description="the dataset's name (default: the file name without its extension)"
    )
