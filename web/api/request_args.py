"""Reading JSON bodies and query parameters, with clear 400s for anything malformed."""
from __future__ import annotations

import json

from flask import request

from ..errors import ApiError


def json_object() -> dict:
    """The request body as a JSON object (the Content-Type is not insisted on, the syntax is)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty: send a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", f"the JSON body must be an object, not {type(data).__name__}")
    return data


def int_arg(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, "invalid_parameter", f"{name} must be {bounds}, not {value}")
    return value


def optional_int_arg(name: str) -> int | None:
    if request.args.get(name) in (None, ""):
        return None
    return int_arg(name, 0, minimum=0)


def choice_arg(name: str, choices: list[str]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw
