"""Multi-label metrics against hand-computed values; thresholds tuned per label on validation rows."""
from __future__ import annotations

import numpy as np
import pytest

from ml.multilabel import multilabel_metrics, predict_labels, tune_thresholds

LABELS = ["a", "b", "c"]
TARGETS = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
PROBS = [[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.3, 0.8, 0.55], [0.1, 0.6, 0.2]]


def test_metrics_at_half_match_hand_computed_values():
    m = multilabel_metrics(TARGETS, PROBS, LABELS, [0.5, 0.5, 0.5])
    # decisions: [1,0,1] ok, [0,1,0] ok, [0,1,1] vs [1,1,0], [0,1,0] vs [0,0,0] -> 2 of 4 rows fully right
    assert m["subset_accuracy"] == m["accuracy"] == 0.5
    # a: TP1 FP0 FN1; b: TP2 FP1 FN0; c: TP1 FP1 FN0
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 6), "support": 2}
    assert m["per_class"]["b"] == {"precision": round(2 / 3, 6), "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 6), "support": 1}
    assert m["micro_f1"] == round(2 * 4 / (2 * 4 + 2 + 1), 6)  # TP 4, FP 2, FN 1
    assert m["macro_f1"] == round((2 / 3 + 0.8 + 2 / 3) / 3, 6)
    assert m["validation_examples"] == 4


def test_metrics_use_the_given_thresholds():
    m = multilabel_metrics(TARGETS, PROBS, LABELS, [0.25, 0.65, 0.58])
    assert m["subset_accuracy"] == 0.75  # only row 1 gets a wrong "a"
    assert m["per_class"]["a"]["precision"] == round(2 / 3, 6) and m["per_class"]["a"]["recall"] == 1.0
    assert m["per_class"]["b"]["f1"] == m["per_class"]["c"]["f1"] == 1.0
    assert predict_labels(PROBS, [0.25, 0.65, 0.58]).tolist() == [[1, 0, 1], [1, 1, 0], [1, 1, 0], [0, 0, 0]]


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="one shape"):
        multilabel_metrics(TARGETS, [row[:2] for row in PROBS], LABELS, [0.5] * 3)
    with pytest.raises(ValueError, match="label names"):
        multilabel_metrics(TARGETS, PROBS, ["a", "b"], [0.5] * 3)
    with pytest.raises(ValueError, match="one threshold per label"):
        multilabel_metrics(TARGETS, PROBS, LABELS, [0.5, 0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        multilabel_metrics([[2, 0, 0]] * 4, PROBS, LABELS, [0.5] * 3)
    assert multilabel_metrics(np.zeros((0, 3)), np.zeros((0, 3)), LABELS, [0.5] * 3)["validation_examples"] == 0


def test_tune_thresholds_hand_computed():
    # a: best cut at 0.3 (TP2 FP1, F1 0.8), next score below is 0.1 -> 0.2; b: cut 0.7 (perfect), below 0.6 -> 0.65;
    # c: cut 0.6 (perfect), below 0.55 -> 0.575
    assert tune_thresholds(TARGETS, PROBS) == pytest.approx([0.2, 0.65, 0.575])
    tuned = multilabel_metrics(TARGETS, PROBS, LABELS, tune_thresholds(TARGETS, PROBS))
    assert tuned["macro_f1"] > multilabel_metrics(TARGETS, PROBS, LABELS, [0.5] * 3)["macro_f1"]


def test_tuned_thresholds_maximise_each_labels_f1():
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 4)) < [0.1, 0.3, 0.5, 0.0]).astype(int)  # the last label never occurs
    probs = np.clip(targets * 0.3 + rng.random((60, 4)) * 0.7, 0, 1)  # informative but noisy
    thresholds = tune_thresholds(targets, probs)
    assert thresholds[3] == 0.5  # no positive: F1 is undefined, the default stays
    labels = list("wxyz")
    tuned = multilabel_metrics(targets, probs, labels, thresholds)["per_class"]
    for grid_value in np.linspace(0.0, 1.0, 101):
        grid = multilabel_metrics(targets, probs, labels, [grid_value] * 4)["per_class"]
        for label in "wxy":
            assert tuned[label]["f1"] >= grid[label]["f1"]
    assert all(0.0 <= t <= 1.0 for t in thresholds)


def test_cross_fitted_thresholds_are_tuned_on_the_other_rows():
    from ml.multilabel import cross_fitted_thresholds

    rng = np.random.default_rng(5)
    targets = (rng.random((40, 3)) < 0.4).astype(int)
    probs = np.clip(targets * 0.3 + rng.random((40, 3)) * 0.7, 0, 1)
    per_row = cross_fitted_thresholds(targets, probs, folds=2, seed=0)
    assert per_row.shape == (40, 3)
    fold = np.random.default_rng(0).permutation(40) % 2
    for k in (0, 1):
        held = fold == k
        assert np.allclose(per_row[held], tune_thresholds(targets[~held], probs[~held]))
    # too few rows to hold any out: every row gets the thresholds tuned on all of them
    assert np.allclose(cross_fitted_thresholds(targets[:3], probs[:3]), [tune_thresholds(targets[:3], probs[:3])] * 3)
    assert predict_labels(probs, per_row).shape == (40, 3)


def test_cross_fitting_does_not_flatter_thresholds_on_noise():
    """Scores that carry no signal: thresholds tuned and judged on the same rows look better than they are;
    judged cross-fitted, they look like what they are."""
    from ml.multilabel import cross_fitted_thresholds

    rng = np.random.default_rng(11)
    targets = (rng.random((200, 4)) < 0.3).astype(int)
    noise = rng.random((200, 4))
    labels = ["a", "b", "c", "d"]
    in_sample = multilabel_metrics(targets, noise, labels, tune_thresholds(targets, noise))["macro_f1"]
    honest = multilabel_metrics(targets, noise, labels, cross_fitted_thresholds(targets, noise))["macro_f1"]
    assert honest < in_sample - 0.02
