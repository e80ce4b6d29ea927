"""Validation metrics and the training history.

Per task: accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (scikit-learn). The
history helpers say which evaluation is best for the chosen ``metric`` (early stopping and the saved checkpoint).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ml.config import IGNORE_INDEX

LOWER_IS_BETTER = frozenset({"val_loss"})  # every other metric is better when higher


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """``{"labels", "matrix"}``: ``matrix[i][j]`` counts rows of true label i predicted as j (rows = true label, as
    sklearn's ``confusion_matrix``); rows whose true label is ``IGNORE_INDEX`` are left out."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    pairs = [(t, p) for t, p in zip(y_true, y_pred) if t != IGNORE_INDEX]
    if not pairs:
        return {"labels": list(labels), "matrix": [[0] * len(labels) for _ in labels]}
    t, p = zip(*pairs)
    matrix = sk_confusion_matrix(t, p, labels=list(range(len(labels))))
    return {"labels": list(labels), "matrix": [[int(n) for n in row] for row in matrix]}


def task_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of one single-label task (rows labelled -100 ignored).

    ``{"accuracy", "macro_f1", "per_class": {label: {"precision", "recall", "f1", "support"}},
    "confusion_matrix": {"labels", "matrix"}, "validation_examples"}``; the matrix sums to ``validation_examples``.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    pairs = [(t, p) for t, p in zip(y_true, y_pred) if t != IGNORE_INDEX]
    if not pairs:
        return {"accuracy": None, "macro_f1": None, "validation_examples": 0, "per_class": {},
                "confusion_matrix": confusion_matrix([], [], labels)}
    t, p = zip(*pairs)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=list(range(len(labels))), zero_division=0
    )
    return {
        "accuracy": _r(accuracy_score(t, p)),
        "macro_f1": _r(f1_score(t, p, average="macro", zero_division=0)),
        "validation_examples": len(pairs),
        "per_class": {
            label: {"precision": _r(precision[i]), "recall": _r(recall[i]), "f1": _r(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(t, p, labels),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return _r(sum(values) / len(values)) if values else None


def metric_value(record: Mapping[str, Any], metric: str) -> float | None:
    """The value of ``metric`` in a history record. Single-label records carry no ``micro_f1``: there it equals
    accuracy (every row has exactly one true and one predicted label)."""
    if metric == "micro_f1" and record.get("micro_f1") is None:
        return record.get("accuracy")
    return record.get(metric)


def is_better(value: float | None, best: float | None, metric: str) -> bool:
    """True when ``value`` strictly improves on ``best`` (ties keep the earlier checkpoint; None never wins)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best
