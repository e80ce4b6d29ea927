"""Reading JSON bodies and query parameters, with clear 4xx answers for anything malformed or hostile.

A JSON body must be sent as ``application/json`` (415 otherwise): a cross-site HTML form can only send
``text/plain``, ``application/x-www-form-urlencoded`` or ``multipart/form-data``, so it can never drive the API.
What is parsed must also be storable: PostgreSQL's JSON rejects NaN and Infinity, its text columns reject lone
UTF-16 surrogates, and a deeply nested document would exhaust the stack of whatever walks it next.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.datastructures import FileStorage

from core.specs import MAX_SQL_ID

from ..errors import ApiError, validation_error

Q = TypeVar("Q", bound=BaseModel)
F = TypeVar("F", bound=BaseModel)

MAX_JSON_DEPTH = 32  # the deepest request model (class_weights: {task: [weights]}) needs 3 levels


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_json", message)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _check_storable(data: object) -> None:
    """Depth at most MAX_JSON_DEPTH and no lone surrogate in any string or key (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid("the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text") from None
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _invalid(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def json_object() -> dict:
    """The request body as a JSON object, valid and storable (400 otherwise); ``web.guards`` already answered 415
    for any body that is not ``application/json``."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise _invalid("the request body is empty: send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise _invalid(f"the JSON body must be an object, not {type(data).__name__}")
    _check_storable(data)
    return data


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else f"{raw[:40]}...")


def _expectation(prop: dict) -> str:
    """What a query parameter's JSON schema (from its query model) admits, in words for an error message."""
    if "enum" in prop:
        return f"one of {', '.join(map(str, prop['enum']))}"
    if prop.get("type") == "integer":
        low, high = prop.get("minimum"), prop.get("maximum")
        if high is not None and high < MAX_SQL_ID:
            return f"an integer between {low} and {high}"
        return f"an integer of at least {low} (and below 2^63)" if low is not None else "an integer below 2^63"
    if prop.get("type") == "string":
        return f"a text of {prop.get('minLength', 0)} to {prop.get('maxLength', 'any number of')} characters"
    return "valid"


def _query_error(model: type[BaseModel], exc: ValidationError) -> ApiError:
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]) if error.get("loc") else "query"
    prop = parameter_schemas(model).get(name, {})
    raw = request.args.get(name, "")
    return ApiError(400, "invalid_parameter", f"{name} must be {_expectation(prop)}, not {_shown(raw)}")


@lru_cache(maxsize=None)
def parameter_schemas(model: type[BaseModel]) -> dict[str, dict]:
    """The JSON schema of each field of query model ``model``, as a query parameter: a parameter is absent or has a
    value, never null, so the ``null`` branch of an optional field (and its null default) is left out."""
    properties = model.model_json_schema()["properties"]
    result = {}
    for name, prop in properties.items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1:
            prop = {**branches[0], **prop}
        elif branches:
            prop["anyOf"] = branches
        if prop.get("default", ...) is None:
            del prop["default"]
        result[name] = prop
    return result


def query_args(model: type[Q]) -> Q:
    """The query string validated by ``model`` (``web.queries``); 400 ``invalid_parameter`` naming the first bad
    parameter and what it admits. An empty value is a value (``?limit=`` is not an integer), not an absence;
    unknown parameters are ignored (clients may add their own, e.g. cache busters)."""
    values = {}
    for name in model.model_fields:
        given = request.args.getlist(name)
        if len(given) > 1:  # every query parameter is one value: a repeated one is an array, not what it documents
            raise ApiError(400, "invalid_parameter", f"{name} is given {len(given)} times: give it once")
        if given:
            values[name] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _query_error(model, exc) from None


def form_args(model: type[F]) -> F:
    """A multipart form (its fields and files) validated by ``model``: a missing file part is 400 ``missing_file``,
    any other problem 422 ``validation_error``."""
    values = {**request.form.to_dict(), **request.files.to_dict()}
    for name, field in model.model_fields.items():
        if field.annotation is FileStorage and field.is_required() and name not in values:
            raise ApiError(
                400, "missing_file", f"send {field.description or 'the file'} as a multipart/form-data field "
                f"named {name!r}"
            )
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from None
