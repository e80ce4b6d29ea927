"""web.charts: training curves and confusion-matrix heat maps as SVG that parses as XML and holds the data."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from web.charts import confusion_heatmap, history_charts, line_chart

SVG = "{http://www.w3.org/2000/svg}"
HISTORY = [
    {"step": 10, "epoch": 1, "train_loss": 1.1, "val_loss": 0.9, "accuracy": 0.55, "macro_f1": 0.41},
    {"step": 20, "epoch": 2, "train_loss": 0.7, "val_loss": 0.8, "accuracy": 0.66, "macro_f1": 0.58},
    {"step": 30, "epoch": 3, "train_loss": 0.4, "val_loss": None, "accuracy": 0.7, "macro_f1": 0.63},
]


def _series(svg: str) -> dict[str, list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    out = {}
    for group in root.iter(f"{SVG}g"):
        if "data-series" in group.attrib:
            (line,) = group.iter(f"{SVG}polyline")
            out[group.attrib["data-series"]] = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
    return out


def test_history_charts_draw_every_series_against_the_step():
    loss, scores = history_charts(HISTORY)
    loss_series, score_series = _series(loss), _series(scores)
    assert set(loss_series) == {"train_loss", "val_loss"} and set(score_series) == {"accuracy", "macro_f1"}
    assert len(loss_series["train_loss"]) == 3 and len(loss_series["val_loss"]) == 2  # a missing value is no point
    xs = [x for x, _ in loss_series["train_loss"]]
    assert xs == sorted(xs) and len(set(xs)) == 3  # later steps further right
    ys = [y for _, y in loss_series["train_loss"]]
    assert ys == sorted(ys)  # the loss falls: SVG y grows downwards
    assert [y for _, y in score_series["accuracy"]] == sorted((y for _, y in score_series["accuracy"]), reverse=True)
    assert "macro-F1" in scores and "validation loss" in loss


def test_no_history_no_charts_and_an_empty_series_still_parses():
    assert history_charts(None) == [] and history_charts([]) == []
    svg = line_chart([("a", "a", [])], title="empty")
    assert "no points yet" in svg and ET.fromstring(svg) is not None
    single = line_chart([("a", "a", [(5, 0.5)])], title="one point")  # one x value: no division by zero
    assert len(_series(single)["a"]) == 1


def test_heatmap_cells_hold_the_counts_rows_true_columns_predicted():
    confusion = {"labels": ["neg", "neu", "pos"], "matrix": [[5, 1, 0], [2, 3, 1], [0, 0, 7]]}
    root = ET.fromstring(confusion_heatmap(confusion))
    cells = [g.attrib for g in root.iter(f"{SVG}g") if "data-count" in g.attrib]
    assert len(cells) == 9
    grid = {(c["data-true"], c["data-predicted"]): int(c["data-count"]) for c in cells}
    assert grid[("neu", "neg")] == 2 and grid[("pos", "pos")] == 7
    assert sum(grid.values()) == 19


def test_hostile_labels_are_escaped_and_still_parse():
    labels = ["<script>alert(1)</script>", "a & b", 'quote"\x01bell', "x" * 300]
    confusion = {"labels": labels, "matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}
    svg = confusion_heatmap(confusion, title="t <b>")
    assert "<script>" not in svg and "<b>" not in svg
    root = ET.fromstring(svg)
    trues = {g.attrib["data-true"] for g in root.iter(f"{SVG}g") if "data-true" in g.attrib}
    assert trues == {"<script>alert(1)</script>", "a & b", 'quote"bell', "x" * 300}
    assert ET.fromstring(line_chart([("k<", "n&", [(1, 1)])], title="<t>")) is not None


def test_a_malformed_matrix_draws_nothing():
    assert confusion_heatmap(None) == "" and confusion_heatmap({"labels": ["a", "b"], "matrix": [[1, 2]]}) == ""


def test_many_labels_stay_readable():
    labels = [f"label {i}" for i in range(40)]
    matrix = [[1 if i == j else 0 for j in range(40)] for i in range(40)]
    root = ET.fromstring(confusion_heatmap({"labels": labels, "matrix": matrix}))
    assert float(root.attrib["width"]) < 1000  # cells shrink instead of the map growing without bound
    assert not [t for t in root.iter(f"{SVG}text") if "count" in t.attrib.get("class", "")]  # too small for counts
