"""Multi-label validation metrics and per-label decision thresholds (scikit-learn).

A multi-label model scores every label independently (sigmoid probabilities, (N, C)); a row gets every label whose
probability reaches that label's threshold. :func:`tune_thresholds` picks the thresholds on the validation split;
:func:`multilabel_metrics` reports subset accuracy, micro/macro-F1 and per-label precision/recall/F1/support at
given thresholds. Metrics judged on the rows that chose the thresholds would flatter them, so the reported
validation metrics use :func:`cross_fitted_thresholds`: each row is decided by thresholds tuned on the other rows.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5


def _r(x: float, digits: int = 6) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


def _arrays(targets: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``targets`` as a 0/1 int matrix and ``probs`` as a float matrix, both (N, C); ValueError on a shape mismatch."""
    y = np.asarray(targets, dtype=float)
    p = np.asarray(probs, dtype=float)
    if y.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"targets and probs must be (rows, labels) matrices of one shape, got {y.shape} and {p.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("multi-label targets must be 0 or 1")
    return y.astype(int), p


def predict_labels(probs: Any, thresholds: Any) -> np.ndarray:
    """The 0/1 decisions (N, C): label c is on when its probability is >= ``thresholds[c]`` (C values), or row by
    row when ``thresholds`` is an (N, C) matrix."""
    p = np.asarray(probs, dtype=float)
    t = np.asarray(thresholds, dtype=float)
    if p.ndim != 2 or t.shape not in ((p.shape[1],), p.shape):
        raise ValueError(f"need one threshold per label: {p.shape[-1] if p.ndim else 0} labels, {t.size} thresholds")
    return (p >= t).astype(int)


def multilabel_metrics(
    targets: Any, probs: Any, labels: Sequence[str], thresholds: Any
) -> dict[str, Any]:
    """Metrics of multi-label predictions at ``thresholds``.

    Args:
        targets: (N, C) 0/1 true labels; probs: (N, C) probabilities; labels: the C label names; thresholds: C
        values, or (N, C) per row (:func:`cross_fitted_thresholds`).
    Returns:
        ``{"accuracy", "subset_accuracy", "micro_f1", "macro_f1", "per_class": {label: {"precision", "recall",
        "f1", "support"}}, "validation_examples"}``. ``accuracy`` is the subset accuracy (a row counts only when
        all its C decisions are right: the strict measure, and what single-label accuracy reduces to);
        ``support`` is the number of rows carrying the label. A label never true nor predicted scores 0.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    y, p = _arrays(targets, probs)
    labels = [str(label) for label in labels]
    if len(labels) != y.shape[1]:
        raise ValueError(f"{len(labels)} label names for {y.shape[1]} label columns")
    if y.shape[0] == 0:
        return {
            "accuracy": None, "subset_accuracy": None, "micro_f1": None, "macro_f1": None,
            "per_class": {}, "validation_examples": 0,
        }
    pred = predict_labels(p, thresholds)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    subset = _r(accuracy_score(y, pred))  # on indicator matrices sklearn's accuracy is the subset accuracy
    return {
        "accuracy": subset,
        "subset_accuracy": subset,
        "micro_f1": _r(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": _r(f1_score(y, pred, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": _r(precision[c]), "recall": _r(recall[c]), "f1": _r(f1[c]), "support": int(support[c])}
            for c, label in enumerate(labels)
        },
        "validation_examples": int(y.shape[0]),
    }


def tune_thresholds(targets: Any, probs: Any) -> list[float]:
    """Per label, the decision threshold that maximises that label's F1 on these (validation) rows.

    Candidates are the label's own probabilities (``precision_recall_curve``): "on when p >= the score of the
    k-th most likely row". Of the best cut, the threshold returned is the midpoint between the lowest score kept
    and the highest score below it (0 when none is below): the same decisions on these rows, with a margin on
    both sides for new ones. Ties in F1 go to the higher threshold (fewer false positives). A label without any
    positive row (F1 cannot be measured) keeps 0.5.
    """
    from sklearn.metrics import precision_recall_curve

    y, p = _arrays(targets, probs)
    thresholds = []
    for c in range(y.shape[1]):
        scores, truth = p[:, c], y[:, c]
        if truth.sum() == 0:
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, cuts = precision_recall_curve(truth, scores)
        precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
        denominator = precision + recall
        f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
        best = len(f1) - 1 - int(np.argmax(f1[::-1]))  # cuts increase: the last maximum is the highest threshold
        cut = float(cuts[best])
        below = scores[scores < cut]
        threshold = (cut + float(below.max())) / 2 if below.size else cut / 2
        thresholds.append(float(min(max(threshold, 0.0), 1.0)))
    return thresholds


def cross_fitted_thresholds(targets: Any, probs: Any, folds: int = 2, seed: int = 0) -> np.ndarray:
    """(N, C) thresholds for judging tuned thresholds on the rows that tune them, without flattering them: the rows
    are split into ``folds`` random folds, and each fold's rows get the thresholds :func:`tune_thresholds` picks on
    the other folds. With fewer than two rows per fold there is nothing to hold out, and every row gets the
    thresholds tuned on all rows."""
    y, p = _arrays(targets, probs)
    rows = y.shape[0]
    if rows < 2 * folds:
        return np.tile(np.asarray(tune_thresholds(y, p), dtype=float), (rows, 1)).reshape(p.shape)
    fold = np.random.default_rng(seed).permutation(rows) % folds
    out = np.empty_like(p)
    for k in range(folds):
        held = fold == k
        out[held] = tune_thresholds(y[~held], p[~held])
    return out
