"""Turning service/validation errors into form messages, handling upload forms, and guessing a dataset's columns for
the forms."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from flask_wtf import FlaskForm

from ..errors import ApiError


def apply_error(form: FlaskForm, exc: ApiError, general: list[str], *, aliases: dict[str, str] | None = None) -> None:
    """Attach ``exc`` to the fields it names (pydantic details), or to the general error list."""
    aliases = aliases or {}
    if exc.details:
        for detail in exc.details:
            field_name = aliases.get(detail["field"].split(".")[0], detail["field"].split(".")[0])
            field = form._fields.get(field_name) if field_name else None
            if field is not None:
                field.errors = [*field.errors, detail["message"]]
            else:
                general.append(f"{detail['field']}: {detail['message']}" if detail["field"] else detail["message"])
    else:
        general.append(exc.message)


def submit_upload(form: FlaskForm, save: Callable[[BinaryIO, str | None, str | None], dict[str, Any]]
                  ) -> tuple[dict[str, Any] | None, list[str]]:
    """For a submitted upload form (fields ``file`` and ``name``): ``save(stream, filename, name)``'s result, or None
    with the errors attached to the form (an error naming no field goes under the file field) and the general ones.
    """
    general: list[str] = []
    if not form.validate_on_submit():
        return None, general
    upload = form.file.data
    try:
        return save(upload.stream, upload.filename, form.name.data), general
    except ApiError as exc:
        apply_error(form, exc, general)
        if not exc.details:
            form.file.errors = [*form.file.errors, *general]
            general = []
        return None, general


TEXT_COLUMN_NAMES = ("text", "tweet", "sentence", "content", "body")


def guess_column(columns: list[str], candidates: tuple[str, ...], fallback: int) -> str | None:
    """The first of ``candidates`` among ``columns`` (case-insensitive), else the column at ``fallback``."""
    for name in candidates:
        for column in columns:
            if column.lower() == name:
                return column
    return columns[fallback] if len(columns) > fallback else (columns[0] if columns else None)
