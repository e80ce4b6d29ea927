"""Multiple choice through the platform's training loop and serving backend: a tiny model learns 16 rows (3 or 4
choices each), is saved, loads back as a multiple-choice model and answers the rows back through the batching
engine, whose per-pair scores equal the (B, C, T) forward and whose concurrent requests never mix."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
import torch

from core.options import TrainConfig
from core.task_types.multiple_choice import Example
from ml.config import TrainingDataError
from ml.loop import train_classifier
from ml.mc_data import collate_choices, encode_pairs
from ml.mc_serving import ChoicePredictor
from ml.inference import clear_predictor_cache, get_predictor

ANIMALS = ["cat", "dog", "horse", "bird"]
NAMES = ["Alice", "Bob", "Carol", "Dave"]


def mc_rows() -> list[dict[str, str]]:
    """16 SWAG-style rows: the right ending (the animal of the context runs home; the others sleep) at varying
    positions; odd rows have 3 choices (ending3 empty: fewer choices, padded and masked); labels as positions,
    every fourth as the right choice's text."""
    rows = []
    for i in range(16):
        animal = ANIMALS[i % 4]
        order = ANIMALS[i % 3:] + ANIMALS[:i % 3]
        if i % 2:
            order = [a for a in order if a == animal or a != ANIMALS[(i + 1) % 4]][:3]
        endings = [f"the {a} runs home" if a == animal else f"the {a} sleeps" for a in order] + [""] * (4 - len(order))
        label = order.index(animal)
        rows.append({"context": f"{NAMES[i // 4]} owns a {animal}.", "question": "Then",
                     **{f"ending{k}": e for k, e in enumerate(endings)},
                     "label": endings[label] if i % 4 == 3 else str(label)})
    return rows


def mc_config(**overrides) -> SimpleNamespace:
    defaults = {name: field.default for name, field in TrainConfig.model_fields.items()}
    base = dict(task_type="multiple-choice", context_column="context", label_column="label", label_columns=["label"],
                max_length=24, epochs=15, batch_size=8, learning_rate=3e-3, dropout=0.0, seed=0, metric=None,
                validation_split=0.0)
    return SimpleNamespace(**{**defaults, **base, **overrides})


def _examples(rows):
    return [Example(r["context"], r["question"], [r[f"ending{k}"] for k in range(4) if r[f"ending{k}"]]) for r in rows]


def _gold(rows):
    out = []
    for r, example in zip(rows, _examples(rows)):
        out.append(int(r["label"]) if r["label"].isdigit() else example.choices.index(r["label"]))
    return out


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_tiny_model_trains_saves_loads_and_answers_back(family, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    rows = mc_rows()
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    result = train_classifier(rows, mc_config(family=family, encoder=str(encoder)), tmp_path / "model",
                              validation_rows=rows)
    metrics = result.metrics
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0 and metrics["metric"] == "accuracy"
    assert metrics["task_type"] == "multiple-choice" and metrics["choices"] == {"min": 3, "max": 4}
    assert metrics["rows"] == {"train": 16, "validation": 16} and result.tasks == {"choice": ["0", "1", "2", "3"]}
    assert all({"accuracy", "macro_f1", "val_loss"} <= set(r) for r in metrics["history"])
    assert set(metrics["per_position"]) <= {"0", "1", "2", "3"}

    predictor = ChoicePredictor.load(tmp_path / "model")
    answers = predictor.predict([{"context": r["context"], "question": r["question"], "choices": e.choices}
                                 for r, e in zip(rows, _examples(rows))])
    assert [a["choice_index"] for a in answers] == _gold(rows)
    assert all(len(a["scores"]) == len(a["choices"]) and sum(a["scores"]) == pytest.approx(1.0) for a in answers)
    assert all(a["choice"] == a["choices"][a["choice_index"]] for a in answers)


def test_served_pair_scores_equal_the_batched_forward_and_requests_never_mix(tiny_bert_dir, tmp_path):
    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model

    model = build_model("bert", {"choice": ["0", "1", "2"]}, tiny_bert_dir, task_type="multiple-choice",
                        dropout=0.0).eval()
    model.max_length = 24
    save_model(model, load_tokenizer(tiny_bert_dir), tmp_path)
    clear_predictor_cache()
    predictor = get_predictor(tmp_path)
    assert isinstance(predictor, ChoicePredictor)
    examples = _examples(mc_rows())
    # the reference: the (B, C, T) forward of every row at once, padded choices masked
    batch = collate_choices(encode_pairs(predictor.tokenizer, examples, 24), predictor.pad_id)
    with torch.no_grad():
        expected = torch.softmax(model(**batch).logits, dim=-1)  # (16, 4)
    results: dict[int, list] = {}

    def ask(k):  # four concurrent requests of four rows each share the engine's batches
        results[k] = predictor.engine.predict(examples[4 * k:4 * k + 4])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers = [a for k in range(4) for a in results[k]]
    for i, (answer, example) in enumerate(zip(answers, examples)):
        assert answer["choices"] == example.choices
        assert answer["scores"] == pytest.approx(expected[i, :len(example.choices)].tolist(), abs=1e-5)
    clear_predictor_cache()


def test_bad_rows_fail_training_clearly(tiny_bert_dir, tmp_path):
    rows = mc_rows()
    rows[5]["label"] = "7"
    with pytest.raises(TrainingDataError, match="row 6: label 7 is out of range"):
        train_classifier(rows, mc_config(encoder=str(tiny_bert_dir)), tmp_path / "m")
    with pytest.raises(TrainingDataError, match="at least 10 rows"):
        train_classifier(mc_rows()[:4], mc_config(encoder=str(tiny_bert_dir)), tmp_path / "m")
    listed = [{"context": r["context"], "options": json.dumps([r[f"ending{k}"] for k in range(4) if r[f"ending{k}"]]),
               "label": r["label"]} for r in mc_rows()]
    config = mc_config(encoder=str(tiny_bert_dir), choices_column="options", epochs=1)
    assert train_classifier(listed, config, tmp_path / "listed").metrics["choices"] == {"min": 3, "max": 4}


def test_micro_batches_under_a_token_budget_give_the_unsplit_gradient(tiny_bert_dir):
    """A batch of rows over the training token budget runs as micro-batches (each row's size: its choices x its
    longest choice) whose accumulated gradient is the whole batch's."""
    from ml.loop import micro_batches, train_step
    from ml.mc_data import ChoiceBatches
    from models.encoders import load_tokenizer
    from models.registry import build_model

    rows = mc_rows()
    tokenizer = load_tokenizer(tiny_bert_dir)
    data = ChoiceBatches(encode_pairs(tokenizer, _examples(rows), 24), _gold(rows), tokenizer.pad_token_id)
    assert len(data.input_ids[1]) == 3 * max(len(ids) for ids, _ in data.pairs[1])  # 3 choices on odd rows
    model = build_model("bert", {"choice": ["0", "1", "2", "3"]}, tiny_bert_dir, task_type="multiple-choice",
                        dropout=0.0)
    batch = list(range(16))
    assert len(micro_batches(data, batch, 200)) > 1
    grads = []
    for budget in (10**9, 200):
        model.zero_grad()
        loss = train_step(model, data, batch, "cpu", budget)
        grads.append((loss, model.head.classifier.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
