"""Recompute a training run's reported validation metrics from the saved model's own predictions.

``train_classifier`` evaluates on a seeded split of the rows; these helpers rebuild that split with the same public
functions (``prepare_examples``, ``split_indices``) so a test can classify the validation texts with the saved model
and compare sklearn's accuracy / macro-F1 of those predictions with the numbers the training reported.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

# Training evaluates a padded batch, the predictor another: float sums differ in the last bits, so a row whose two
# best scores are this close may take the other label. Each such row may move accuracy by 1/n; usually there is none.
NEAR_TIE = 1e-4


def validation_rows(rows: Sequence[Mapping[str, str]], *, text_column: str, label_columns: list[str],
                    validation_split: float, seed: int, family: str = "bert") -> tuple[list[str], dict[str, list]]:
    """The validation texts and their true labels per task (``None`` where a row has no label for a task)."""
    from ml.config import IGNORE_INDEX, TrainConfig
    from ml.data import prepare_examples, split_indices

    examples = prepare_examples(rows, TrainConfig(text_column=text_column, label_columns=label_columns,
                                                  family=family))
    first = next(iter(examples.tasks))
    _, val, _ = split_indices(examples.labels[first], validation_split, seed)
    truth = {task: [None if examples.labels[task][i] == IGNORE_INDEX else names[examples.labels[task][i]]
                    for i in val]
             for task, names in examples.tasks.items()}
    return [examples.texts[i] for i in val], truth


def _margin(scores: Mapping[str, float]) -> float:
    best = sorted(scores.values(), reverse=True)
    return best[0] - best[1] if len(best) > 1 else 1.0


def assert_task_metrics(reported: Mapping, truth: Sequence[str | None], predicted: Sequence[Mapping]) -> None:
    """``reported`` (``accuracy``, ``macro_f1``, ``per_class``?) equals sklearn's on ``predicted`` vs ``truth``.

    ``predicted``: one ``{"label", "scores"}`` per validation row, in the same order as ``truth``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    assert len(truth) == len(predicted)
    pairs = [(t, p) for t, p in zip(truth, predicted) if t is not None]
    assert pairs, "no labelled validation row"
    y_true = [t for t, _ in pairs]
    y_pred = [p["label"] for _, p in pairs]
    near_ties = sum(_margin(p["scores"]) < NEAR_TIE for _, p in pairs)
    accuracy = accuracy_score(y_true, y_pred)
    assert abs(reported["accuracy"] - accuracy) <= near_ties / len(pairs) + 1e-6, (reported["accuracy"], accuracy)
    if near_ties == 0:
        macro_f1 = f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert reported["macro_f1"] == pytest.approx(macro_f1, abs=1e-6)
    if "per_class" in reported:
        support = Counter(y_true)
        assert {label: c["support"] for label, c in reported["per_class"].items()} == {
            label: support.get(label, 0) for label in reported["per_class"]}
        assert set(support) <= set(reported["per_class"])
