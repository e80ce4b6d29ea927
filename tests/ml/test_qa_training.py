"""Question answering through the platform's training loop (``ml.loop.train_classifier``): a tiny model learns 16
questions whose contexts are cut into windows, is saved, loads back as a QA model, and answers them back; the
history, best checkpoint and early stopping follow SQuAD F1."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from core.options import TrainConfig
from ml.config import TrainingDataError
from ml.loop import train_classifier
from models.io import load_model

NAMES = ["Alice", "Bob", "Carol", "Dave"]
PLACES = ["Paris", "Berlin", "Lagos", "Lima"]


def qa_examples(n: int = 16) -> list[dict]:
    """Questions about short contexts: where someone flew (answerable), what they ate (unanswerable: every 4th)."""
    out = []
    for i in range(n):
        name, place, other = NAMES[i % 4], PLACES[(i // 4) % 4], NAMES[(i + 1) % 4]
        context = f"{name} flew to {place} on monday . {other} stayed at home with a cat ."
        if i % 4 == 3:
            out.append({"question": f"what did {name} eat ?", "context": context, "answers": []})
        else:
            start = context.index(place)
            out.append({"question": f"where did {name} fly ?", "context": context,
                        "answers": [(place, start)]})
    return out


def qa_rows(examples=None) -> list[dict[str, str]]:
    """Rows as ``core.datasets`` stores a JSON Lines upload: the answers object as JSON text."""
    return [{"question": e["question"], "context": e["context"],
             "answers": json.dumps({"text": [t for t, _ in e["answers"]],
                                    "answer_start": [s for _, s in e["answers"]]})}
            for e in (examples or qa_examples())]


def qa_config(**overrides) -> SimpleNamespace:
    """``TrainConfig``'s defaults plus the QA fields as a validated request resolves them; max_length 20 cuts each
    context (about 17 tokens after a 6-token question) into two windows."""
    defaults = {name: field.default for name, field in TrainConfig.model_fields.items()}
    base = dict(task_type="question-answering", context_column="context", question_column="question",
                answers_column="answers", doc_stride=4, max_length=20, epochs=40, batch_size=8, learning_rate=3e-3,
                dropout=0.0, seed=0, metric=None, validation_split=0.0, label_column="answers",
                label_columns=["answers"])
    return SimpleNamespace(**{**defaults, **base, **overrides})


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_qa_model_trains_saves_loads(family, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    rows = qa_rows()
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    result = train_classifier(rows, qa_config(family=family, encoder=str(encoder)), tmp_path / "model",
                              validation_rows=rows)
    metrics = result.metrics
    assert metrics["metric"] == "f1" and metrics["task_type"] == "question-answering"
    assert metrics["f1"] == 1.0 and metrics["exact_match"] == 1.0
    assert metrics["has_answer_f1"] == 1.0 and metrics["no_answer_accuracy"] == 1.0
    assert metrics["questions"] == {"train": 16, "validation": 16}
    assert metrics["unanswerable"] == {"train": 4, "validation": 4} and metrics["no_answer_allowed"] is True
    assert metrics["windows"]["train"] > 16  # max_length 20 cut the contexts into windows
    assert result.tasks == {"answer": ["start", "end"]} and metrics["labels"] == ["start", "end"]
    history = metrics["history"]
    assert all({"f1", "exact_match", "has_answer_f1", "no_answer_accuracy", "val_loss"} <= set(r) for r in history)
    best = max(r["f1"] for r in history)
    assert metrics["best_step"] == next(r["step"] for r in history if r["f1"] == best)
    model, _ = load_model(tmp_path / "model")
    assert model.task_type == "question-answering" and model.no_answer and model.stride == 4
    assert model.max_length == 20


def test_bad_data_fails_with_a_clear_message(tiny_bert_dir, tmp_path):
    config = qa_config(encoder=str(tiny_bert_dir), epochs=1)
    rows = qa_rows()
    bad = [dict(r) for r in rows]
    bad[2]["answers"] = json.dumps({"text": ["Rome"], "answer_start": [0]})
    with pytest.raises(TrainingDataError, match="row 3: the context does not hold the answer 'Rome'"):
        train_classifier(bad, config, tmp_path / "a")
    with pytest.raises(TrainingDataError, match="no training question has an answer"):
        train_classifier(qa_rows([e for e in qa_examples() if not e["answers"]] * 3), config, tmp_path / "b")
    long_question = [dict(r, question=" ".join(["word"] * 40)) for r in rows]
    with pytest.raises(TrainingDataError, match="question 1 has"):
        train_classifier(long_question, config, tmp_path / "c")
