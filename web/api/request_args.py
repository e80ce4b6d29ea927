"""Reading JSON bodies and query parameters, with clear 4xx answers for anything malformed or hostile.

A JSON body must be sent as ``application/json`` (415 otherwise): a cross-site HTML form can only send
``text/plain``, ``application/x-www-form-urlencoded`` or ``multipart/form-data``, so it can never drive the API.
What is parsed must also be storable: PostgreSQL's JSON rejects NaN and Infinity, its text columns reject lone
UTF-16 surrogates, and a deeply nested document would exhaust the stack of whatever walks it next.
"""
from __future__ import annotations

import json
import math

from flask import request

from core.specs import MAX_SQL_ID

from ..errors import ApiError

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


def int_arg(name: str, default: int, *, minimum: int = 0, maximum: int = MAX_SQL_ID) -> int:
    """Query parameter ``name`` as an int in ``[minimum, maximum]`` (by default at most a SQL BIGINT); 400 else."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:  # also past Python's 4,300-digit limit on int()
        shown = raw if len(raw) <= 40 else f"{raw[:40]}..."
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, not {shown!r}") from None
    if value < minimum or value > maximum:
        bounds = f"between {minimum} and {maximum}" if maximum < MAX_SQL_ID else f"at least {minimum} (and below 2^63)"
        raise ApiError(400, "invalid_parameter", f"{name} must be {bounds}, not {raw[:40]}")
    return value


def optional_int_arg(name: str) -> int | None:
    """Query parameter ``name`` as a non-negative int below 2^63 (a SQL id), or None when absent."""
    if request.args.get(name) in (None, ""):
        return None
    return int_arg(name, 0, minimum=0)


def choice_arg(name: str, choices: list[str]) -> str | None:
    """Query parameter ``name`` when it is one of ``choices``, None when absent; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        shown = raw if len(raw) <= 40 else f"{raw[:40]}..."
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}, not {shown!r}")
    return raw
