"""The base of every request model: strict fields, no NUL characters, no NaN/Infinity, ids that fit SQL.

Shared by :mod:`core.specs` (serving, accounts) and :mod:`core.options` (training), so both reject the same hostile
input the same way.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

COLUMN_NAME_MAX = 200  # characters of a column name, in requests and in an uploaded dataset's header
ColumnName = Annotated[str, Field(min_length=1, max_length=COLUMN_NAME_MAX)]

# SQL ids are BIGINT on PostgreSQL: anything larger is not an id and must be a 4xx, not a database error.
MAX_SQL_ID = 2**63 - 1
SqlId = Annotated[int, Field(ge=1, le=MAX_SQL_ID, strict=True)]  # strict: true is not the id 1


def field_error(field: str | tuple, message: str, *, title: str = "ClassifyRequest", kind: str = "invalid_source"):
    """A validation error that names ``field`` (a model-level check would otherwise report no field)."""
    loc = field if isinstance(field, tuple) else (field,)
    return ValidationError.from_exception_data(
        title, [InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=None)]
    )


def nul_path(value: Any, path: tuple = ()) -> tuple | None:
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


class StrictModel(BaseModel):
    """Base of every request model: unknown fields, NUL characters and NaN/Infinity are rejected.

    SQL text columns cannot hold NUL (PostgreSQL refuses it) and PostgreSQL's JSON rejects NaN/Infinity, so
    neither may reach a job's params, a name or a label.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = nul_path(data) if isinstance(data, dict) else None
        if where is not None:
            raise field_error(where, "must not contain a NUL character", title=cls.__name__, kind="nul_character")
        return data
