"""Validation metrics of a task: accuracy, macro-F1 and per-class precision/recall/F1/support (scikit-learn)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ml.config import IGNORE_INDEX


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def task_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support of one task (rows labelled -100 ignored)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    pairs = [(t, p) for t, p in zip(y_true, y_pred) if t != IGNORE_INDEX]
    if not pairs:
        return {"accuracy": None, "macro_f1": None, "validation_examples": 0, "per_class": {}}
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
    }


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return _r(sum(values) / len(values)) if values else None
