"""Charts drawn on the server as SVG: training curves and confusion-matrix heat maps. Pure functions returning
SVG markup (no JavaScript library, no CDN), so the job page works offline and its charts are plain XML a test can
parse.

Every text that comes from data (labels, series names) is escaped, and characters XML 1.0 cannot hold are dropped,
so the result always parses. Colours come from ``web/static/style.css`` through class names where they are fixed
(series, axes) and inline where they encode a value (heat-map cells).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from html import escape

# the training history's series, by chart: (key in a history entry, legend name)
LOSS_SERIES = (("train_loss", "train loss"), ("val_loss", "validation loss"))
SCORE_SERIES = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
# question answering's history holds SQuAD scores instead (core.task_types.question_answering)
QA_SERIES = (("exact_match", "exact match"), ("f1", "F1"))
MAX_LABEL_CHARS = 18  # axis labels of a heat map are cut to this (the full label is the cell's tooltip)
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: object) -> str:
    """``value`` as XML-safe text: escaped, with characters XML 1.0 forbids removed."""
    return escape(_NOT_XML.sub("", str(value)), quote=True)


def _num(value: float) -> str:
    return f"{value:.4g}"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def line_chart(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str = "step",
    y_range: tuple[float, float] | None = None,
    width: int = 520,
    height: int = 260,
    chart_id: str | None = None,
) -> str:
    """An SVG line chart. ``series``: ``(key, legend name, [(x, y), ...])``; points whose x or y is missing or not
    finite are left out. ``y_range`` fixes the y axis (e.g. 0..1 for scores), else it fits the data."""
    left, right, top, bottom = 48, 12, 44, 40  # the legend sits between the title and the plot
    plot_w, plot_h = width - left - right, height - top - bottom
    clean = [(key, name, [(float(x), float(y)) for x, y in points if _finite(x) and _finite(y)])
             for key, name, points in series]
    xs = [x for _, _, points in clean for x, _ in points]
    ys = [y for _, _, points in clean for _, y in points]
    attrs = f' id="{_text(chart_id)}"' if chart_id else ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart line-chart"{attrs} viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{_text(title)}">',
           f"<title>{_text(title)}</title>",
           f'<text class="chart-title" x="{left}" y="16">{_text(title)}</text>']
    if not xs:
        out.append(f'<text class="chart-empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">'
                   "no points yet</text></svg>")
        return "".join(out)
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = y_range if y_range is not None else (min(ys), max(ys))
    if y_range is None:
        pad = (y_high - y_low) * 0.08 or abs(y_high) * 0.1 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
        if min(ys) >= 0 and y_low < 0:
            y_low = 0.0
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    out.append(f'<g class="axes"><line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>'
               f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/></g>')
    for tick in _ticks(y_low, y_high):
        y = py(tick)
        out.append(f'<g class="tick"><line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(tick)}</text></g>')
    for tick in _ticks(x_low, x_high):
        x = px(tick)
        out.append(f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_num(tick)}</text>')
    out.append(f'<text class="axis-label" x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">'
               f"{_text(x_label)}</text>")
    for i, (key, name, points) in enumerate(clean):
        if not points:
            continue
        css = f"series series-{i % 4}"
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<g class="{css}" data-series="{_text(key)}"><polyline fill="none" points="{coords}"/>')
        for x, y in points:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3"><title>{_text(name)} at {_num(x)}: '
                       f"{_num(y)}</title></circle>")
        out.append("</g>")
    legend_x = left
    for i, (key, name, points) in enumerate(clean):
        if points:
            out.append(f'<g class="legend series series-{i % 4}"><rect x="{legend_x}" y="{top - 20}" width="10" '
                       f'height="10"/><text x="{legend_x + 14}" y="{top - 11}">{_text(name)}</text></g>')
            legend_x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def history_charts(history: Sequence[Mapping] | None) -> list[str]:
    """The training curves of ``metrics.history`` (one entry per evaluation): losses, then accuracy and macro-F1
    (question answering: exact match and F1), against the step. Empty when there is no history."""
    entries = [h for h in history or [] if isinstance(h, Mapping) and _finite(h.get("step"))]
    if not entries:
        return []

    def series(spec):
        return [(key, name, [(h["step"], h.get(key)) for h in entries]) for key, name in spec]

    if any("exact_match" in h for h in entries):
        scores, title = QA_SERIES, "Validation exact match and F1"
    else:
        scores, title = SCORE_SERIES, "Validation accuracy and macro-F1"
    return [line_chart(series(LOSS_SERIES), title="Loss", chart_id="chart-loss"),
            line_chart(series(scores), title=title, y_range=(0.0, 1.0), chart_id="chart-scores")]


def confusion_heatmap(confusion: Mapping | None, *, title: str = "Confusion matrix", chart_id: str | None = None) -> str:
    """A heat map of ``{"labels": [...], "matrix": [[...]]}`` (rows = true label, columns = predicted). Each cell
    shows its count; its shade is the count's share of its row (the true label's recall on the diagonal)."""
    labels = [str(label) for label in (confusion or {}).get("labels") or []]
    matrix = (confusion or {}).get("matrix") or []
    n = len(labels)
    if not n or len(matrix) != n or any(len(row) != n for row in matrix):
        return ""
    cell = max(14, min(48, 420 // n))
    label_w = 8 + 7 * min(MAX_LABEL_CHARS, max(len(label) for label in labels))
    slant = round(label_w * 0.72)  # a column label, rotated 45 degrees, reaches this far up and to the right
    left, top = label_w + 22, slant + 40
    width, height = left + n * cell + slant, top + n * cell + 10
    show_counts = cell >= 24
    attrs = f' id="{_text(chart_id)}"' if chart_id else ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart heatmap"{attrs} viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{_text(title)}">',
           f"<title>{_text(title)}</title>",
           f'<text class="chart-title" x="4" y="16">{_text(title)}</text>',
           f'<text class="axis-label" x="{left + n * cell / 2}" y="32" text-anchor="middle">predicted</text>',
           f'<text class="axis-label" transform="translate(12 {top + n * cell / 2}) rotate(-90)" '
           'text-anchor="middle">true</text>']
    for j, label in enumerate(labels):
        x = left + j * cell + cell / 2
        out.append(f'<text class="col-label" transform="translate({x:.1f} {top - 6}) rotate(-45)">'
                   f"{_text(_short(label))}</text>")
    for i, (label, row) in enumerate(zip(labels, matrix)):
        y = top + i * cell
        out.append(f'<text class="row-label" x="{left - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end">'
                   f"{_text(_short(label))}</text>")
        total = sum(int(v) for v in row)
        for j, value in enumerate(row):
            share = int(value) / total if total else 0.0
            css = "cell diagonal" if i == j else "cell"
            out.append(f'<g class="{css}" data-true="{_text(label)}" data-predicted="{_text(labels[j])}" '
                       f'data-count="{int(value)}"><rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                       f'style="fill: {_shade(share, diagonal=i == j)}"/>'
                       f"<title>true {_text(label)}, predicted {_text(labels[j])}: {int(value)} "
                       f"({share:.0%} of {_text(label)})</title>")
            if show_counts:
                ink = "light" if share > 0.55 else "dark"
                out.append(f'<text class="count {ink}" x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 4:.1f}" '
                           f'text-anchor="middle">{int(value)}</text>')
            out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def _shade(share: float, *, diagonal: bool) -> str:
    """Blue for the diagonal (correct), red off it (confusions); white at 0, full colour at 1."""
    r, g, b = (53, 83, 216) if diagonal else (192, 57, 43)
    mix = 0.08 + 0.92 * share if share > 0 else 0.0
    return f"rgb({round(255 + (r - 255) * mix)},{round(255 + (g - 255) * mix)},{round(255 + (b - 255) * mix)})"
