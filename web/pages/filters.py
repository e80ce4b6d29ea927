"""Template filters and helpers shared by the pages."""
from __future__ import annotations

import json
from datetime import datetime

from flask import request, url_for

from core.specs import MAX_SQL_ID

from . import bp


@bp.app_template_filter("when")
def when(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not value:
        return "–"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


@bp.app_template_filter("num")
def num(value) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


@bp.app_template_filter("pct")
def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


@bp.app_template_filter("pretty_json")
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _columns(dicts) -> list[str]:
    columns: list[str] = []
    for d in dicts:
        for key, value in d.items():
            if _scalar(value) and key not in columns:
                columns.append(key)
    return columns


@bp.app_template_global()
def metric_sections(metrics: dict | None, prefix: str = "") -> tuple[list, list]:
    """Split a metrics dict of unknown shape into scalars ``[(name, value)]`` and tables
    ``[(title, columns, rows)]`` (per-epoch lists, per-class and per-task dicts), recursively."""
    scalars: list = []
    tables: list = []
    for key, value in (metrics or {}).items():
        title = f"{prefix}{key}"
        if _scalar(value):
            scalars.append((title, value))
        elif isinstance(value, list):
            if value and all(isinstance(v, dict) for v in value):
                columns = _columns(value)
                tables.append((title, columns, [[row.get(c) for c in columns] for row in value]))
            elif all(_scalar(v) for v in value):
                scalars.append((title, ", ".join(num(v) for v in value)))
        elif isinstance(value, dict):
            if value and all(isinstance(v, dict) for v in value.values()):
                columns = _columns(value.values())
                if columns:
                    rows = [[k, *[v.get(c) for c in columns]] for k, v in value.items()]
                    tables.append((title, ["", *columns], rows))
                for k, v in value.items():
                    nested = {kk: vv for kk, vv in v.items() if not _scalar(vv)}
                    sub_scalars, sub_tables = metric_sections(nested, f"{title} › {k} › ")
                    scalars.extend(sub_scalars)
                    tables.extend(sub_tables)
            elif all(_scalar(v) for v in value.values()):
                tables.append((title, ["", "value"], [[k, v] for k, v in value.items()]))
            else:
                sub_scalars, sub_tables = metric_sections(value, f"{title} › ")
                scalars.extend(sub_scalars)
                tables.extend(sub_tables)
    return scalars, tables


# token classification's headline: entity-level micro F1, precision and recall
KEY_METRICS = ("f1", "precision", "recall", "accuracy", "macro_f1", "val_loss", "texts", "texts_per_second")


@bp.app_template_global()
def metric_view(metrics: dict | None) -> dict:
    """Headline numbers (cards), other scalars (a fact list) and tables, for the metrics macro."""
    scalars, tables = metric_sections(metrics)
    key = [(name, value) for name, value in scalars if name in KEY_METRICS]
    other = [(name, value) for name, value in scalars if name not in KEY_METRICS]
    return {"key": key, "other": other, "tables": tables}


@bp.app_template_global()
def page_url(page: int) -> str:
    """The current page's URL with its query string kept and ``page`` replaced."""
    args = {k: v for k, v in request.args.items() if v != ""}
    args["page"] = page
    return url_for(request.endpoint, **(request.view_args or {}), **args)


MAX_PAGE = 1_000_000  # keeps (page - 1) * page size far below SQL's 2^63 limit on OFFSET


def query_int(name: str) -> int | None:
    """``?name=`` as a non-negative int below 2^63; None when absent or anything else (a page never fails on it).

    ``str.isdigit`` alone is not enough: it accepts "²", and more than 4,300 digits, which ``int()`` refuses.
    """
    raw = request.args.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_SQL_ID else None


def page_arg() -> int:
    """``?page=`` as a page number: 1 when absent or not a number, at most :data:`MAX_PAGE`."""
    page = query_int("page")
    return 1 if page is None or page < 1 else min(page, MAX_PAGE)
