"""The training lifecycle (issue 8 §3): evaluation cadence, history, best checkpoint, early stopping, ETA, a separate
validation set, confusion matrices, layer-wise LR decay, and multi-label / pair training through train_classifier."""
from __future__ import annotations

import json
import random

import pytest

from ml import loop
from ml.batches import collate, tokenize
from ml.config import TrainConfig, TrainingDataError
from ml.loop import train_classifier
from ml.optim import encoder_depth, parameter_groups
from models.io import CONFIG_NAME, load_model

from .test_training import config_for, make_rows

HISTORY_KEYS = {"step", "epoch", "train_loss", "val_loss", "accuracy", "macro_f1"}


def scripted_evaluations(monkeypatch, macro_f1: list[float]) -> list[dict]:
    """Make the i-th evaluation report ``macro_f1[i]`` (the real evaluation runs; only that number is replaced) and
    remember the model's weights at each evaluation, to check which ones were saved."""
    seen: list[dict] = []
    real_evaluate, real_score = loop.evaluate, loop.score

    def evaluate(model, *args, **kwargs):
        result = real_evaluate(model, *args, **kwargs)
        result["call"] = len(seen)
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return result

    def score(evaluation, *args, **kwargs):
        per_task = real_score(evaluation, *args, **kwargs)
        next(iter(per_task.values()))["macro_f1"] = macro_f1[evaluation["call"]]
        return per_task

    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop, "score", score)
    return seen


def assert_saved_weights_are(directory, state: dict) -> None:
    import torch

    model, _ = load_model(directory)
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in state.items())


def test_early_stopping_stops_and_restores_the_best_step(tiny_bert_dir, tmp_path, monkeypatch):
    # 6 steps per epoch, evaluation every 2 steps: macro-F1 peaks at the 2nd evaluation (step 4), then 2 worse ones
    states = scripted_evaluations(monkeypatch, [0.40, 0.70, 0.65, 0.60, 0.90, 0.95])
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=3, eval_steps=2, early_stopping_patience=2)
    result = train_classifier(make_rows(), cfg, tmp_path / "out")
    metrics = result.metrics
    assert metrics["stopped_early"] is True and metrics["best_step"] == 4
    assert [h["step"] for h in metrics["history"]] == [2, 4, 6, 8] and metrics["steps"] == 8
    assert [h["macro_f1"] for h in metrics["history"]] == [0.40, 0.70, 0.65, 0.60]
    assert metrics["macro_f1"] == 0.70 and metrics["accuracy"] == metrics["history"][1]["accuracy"]
    assert len(metrics["epochs"]) == 2  # stopped during the second epoch
    assert_saved_weights_are(tmp_path / "out", states[1])
    summary = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())["metadata"]["summary"]
    assert summary["best_step"] == 4 and summary["stopped_early"] is True


def test_without_patience_the_best_checkpoint_is_still_the_one_saved(tiny_bert_dir, tmp_path, monkeypatch):
    states = scripted_evaluations(monkeypatch, [0.5, 0.9, 0.9, 0.3])  # a tie keeps the earlier checkpoint
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=4)
    metrics = train_classifier(make_rows(), cfg, tmp_path / "out").metrics
    assert metrics["stopped_early"] is False and len(metrics["history"]) == 4
    assert metrics["best_step"] == 12 and metrics["macro_f1"] == 0.9
    assert_saved_weights_are(tmp_path / "out", states[1])


def test_val_loss_is_lower_is_better(tiny_bert_dir, tmp_path, monkeypatch):
    losses = iter([0.9, 0.5, 0.7, 0.8])
    real_evaluate = loop.evaluate

    def evaluate(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "loss": next(losses)}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=5, metric="val_loss", early_stopping_patience=2)
    metrics = train_classifier(make_rows(), cfg, tmp_path / "out").metrics
    assert [h["val_loss"] for h in metrics["history"]] == [0.9, 0.5, 0.7, 0.8]
    assert metrics["best_step"] == 12 and metrics["val_loss"] == 0.5 and metrics["stopped_early"] is True
    assert metrics["steps"] == 24 and metrics["total_steps"] == 30


def test_history_eval_steps_cadence_and_eta(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "PROGRESS_INTERVAL_S", 0.0)  # report every step
    calls = []
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=2, eval_steps=5)  # 6 steps per epoch, 12 in all
    metrics = train_classifier(make_rows(), cfg, tmp_path, progress=lambda f, info: calls.append(info)).metrics
    history = metrics["history"]
    assert [h["step"] for h in history] == [5, 10, 12]  # every 5 steps, and after the last one
    assert [h["epoch"] for h in history] == [pytest.approx(5 / 6, abs=1e-4), pytest.approx(10 / 6, abs=1e-4), 2]
    assert all(set(h) == HISTORY_KEYS for h in history)
    assert all(h["train_loss"] > 0 and h["val_loss"] > 0 and 0 <= h["accuracy"] <= 1 for h in history)
    assert metrics["best_step"] in (5, 10, 12)
    json.dumps(metrics, allow_nan=False)

    evaluated = [i for i in calls if i.get("phase") == "evaluated"]
    assert [i["history"] for i in evaluated] == [history[:1], history[:2], history]
    etas = [i["eta_seconds"] for i in calls if i.get("phase") == "train"]
    assert etas and all(isinstance(e, int) and e >= 0 for e in etas)
    assert evaluated[-1]["eta_seconds"] == 0 and calls[-1]["phase"] == "done"


def test_eta_counts_the_remaining_steps_and_evaluations():
    clock = loop._Clock(total_steps=12, eval_every=5, batch_size=8, val_rows=16)
    assert [clock.evaluations_left(s) for s in (0, 4, 5, 11, 12)] == [3, 3, 2, 1, 0]
    assert clock.eta_seconds(0) is None  # nothing measured yet
    clock.steps, clock.step_seconds = 2, 2.0  # 1 s per step; no evaluation yet: 16 rows at a third of 1/8 s
    assert clock.eta_seconds(2) == round(10 * 1.0 + 3 * (16 / 8 / 3))
    clock.evaluations, clock.eval_seconds = 1, 4.0  # measured: 4 s per evaluation
    assert clock.eta_seconds(5) == 7 + 2 * 4


def test_confusion_matrix_sums_to_the_rows_evaluated(tiny_bert_dir, tmp_path):
    metrics = train_classifier(make_rows(), config_for("bert", encoder=str(tiny_bert_dir), epochs=1), tmp_path).metrics
    matrix = metrics["confusion_matrix"]
    assert matrix["labels"] == ["negative", "neutral", "positive"] == metrics["labels"]
    assert sum(map(sum, matrix["matrix"])) == metrics["validation_examples"] == 15
    for i, label in enumerate(matrix["labels"]):  # rows = true label
        assert sum(matrix["matrix"][i]) == metrics["per_class"][label]["support"]
    correct = sum(matrix["matrix"][i][i] for i in range(3))
    assert correct / 15 == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_multitask_confusion_matrices_per_task(tiny_bert_dir, tmp_path):
    rows = make_rows()
    for row in rows[::5]:
        row["topic"] = ""
    metrics = train_classifier(rows, config_for("multitask", encoder=str(tiny_bert_dir), epochs=1), tmp_path).metrics
    for task, labels in (("sentiment", ["negative", "neutral", "positive"]), ("topic", ["airline", "apple", "nfl"])):
        cm = metrics["tasks"][task]["confusion_matrix"]
        assert cm["labels"] == labels
        assert sum(map(sum, cm["matrix"])) == metrics["tasks"][task]["validation_examples"]
    assert metrics["confusion_matrix"] == metrics["tasks"]["sentiment"]["confusion_matrix"]
    assert metrics["tasks"]["topic"]["validation_examples"] < 15  # rows without a topic are not counted
    assert set(metrics["history"][0]["tasks"]) == {"sentiment", "topic"}


def test_validation_rows_replace_the_split(tiny_bert_dir, tmp_path):
    rows, held_out = make_rows(48, seed=1), make_rows(12, seed=2)
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=1)
    metrics = train_classifier(rows, cfg, tmp_path / "a", validation_rows=held_out).metrics
    assert metrics["train_examples"] == 48 and metrics["validation_examples"] == 12
    assert metrics["validation_source"] == "dataset"
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 12

    held_out[3]["sentiment"] = "sarcastic"
    with pytest.raises(TrainingDataError, match="sarcastic"):
        train_classifier(rows, cfg, tmp_path / "b", validation_rows=held_out)
    assert not (tmp_path / "b").exists()


def test_early_stopping_needs_validation_data(tiny_bert_dir, tmp_path):
    cfg = config_for("bert", encoder=str(tiny_bert_dir), validation_split=0.0, early_stopping_patience=1)
    with pytest.raises(TrainingDataError, match="early_stopping_patience needs validation data"):
        train_classifier(make_rows(), cfg, tmp_path)


def test_layer_lr_decay_gives_lower_layers_smaller_steps(tiny_bert_dir, tiny_distilbert_dir):
    from models.registry import build_model

    assert encoder_depth("encoder.embeddings.word_embeddings.weight", 2) == 0
    assert encoder_depth("encoder.encoder.layer.0.attention.self.query.weight", 2) == 1
    assert encoder_depth("encoder.transformer.layer.1.ffn.lin1.weight", 2) == 2
    assert encoder_depth("encoder.pooler.dense.weight", 2) == 2
    for family, encoder in (("bert", tiny_bert_dir), ("distilbert", tiny_distilbert_dir)):
        model = build_model(family, {"y": ["a", "b"]}, str(encoder))
        plain = parameter_groups(model, 1e-3, 1e-2, 0.01)  # decay 1.0: the model's own groups
        assert [(g["name"], g["lr"]) for g in plain] == [(g["name"], g["lr"])
                                                         for g in model.parameter_groups(1e-3, 1e-2, 0.01)]
        groups = parameter_groups(model, 1e-3, 1e-2, 0.01, layer_lr_decay=0.5)
        lr = {id(p): g["lr"] for g in groups for p in g["params"]}
        names = dict(model.named_parameters())
        assert sum(len(g["params"]) for g in groups) == sum(len(g["params"]) for g in plain)  # nothing lost
        embeddings = next(n for n in names if "word_embeddings" in n)
        layer0 = next(n for n in names if ".layer.0." in n)
        layer1 = next(n for n in names if ".layer.1." in n)
        head = next(n for n in names if not n.startswith("encoder."))
        assert lr[id(names[embeddings])] == pytest.approx(1e-3 * 0.25)  # 2 layers: decay ** 2
        assert lr[id(names[layer0])] == pytest.approx(1e-3 * 0.5)
        assert lr[id(names[layer1])] == pytest.approx(1e-3)
        assert lr[id(names[head])] == pytest.approx(1e-2)
        assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].startswith("encoder_no_decay"))


def test_layer_lr_decay_and_label_smoothing_train(tiny_bert_dir, tmp_path):
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=1, layer_lr_decay=0.8, label_smoothing=0.1)
    train_classifier(make_rows(), cfg, tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved["head"]["label_smoothing"] == 0.1
    assert saved["metadata"]["training"]["layer_lr_decay"] == 0.8


def test_collate_multi_label_targets_and_token_types():
    import torch

    batch = collate([[1, 2, 3], [4, 5]], [0, 1], pad_id=0, labels={"tags": [[1, 0, 1], [0, 0, 0]]},
                    token_type_ids=[[0, 1, 1], [0, 1]], multi_label=True)
    assert batch["labels"]["tags"].dtype == torch.float32 and batch["labels"]["tags"].shape == (2, 3)
    assert batch["token_type_ids"].tolist() == [[0, 1, 1], [0, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    single = collate([[1, 2], [3]], [1, 0], pad_id=9, labels={"y": [2, -100]})
    assert single["labels"]["y"].tolist() == [-100, 2] and "token_type_ids" not in single


def test_pairs_tokenize_as_one_sequence_with_token_types(tokenizer):
    ids, types = tokenize(tokenizer, ["a cat sat", "dogs"], 16, pairs=["on the mat", "bark loudly " * 20])
    sep = tokenizer.sep_token_id
    for seq, seg in zip(ids, types):
        assert len(seq) == len(seg) <= 16 and seq.count(sep) == 2
        first_sep = seq.index(sep)
        assert set(seg[: first_sep + 1]) == {0} and set(seg[first_sep + 1 :]) == {1}
    assert tokenize(tokenizer, ["a cat"], 16) == (tokenizer(["a cat"])["input_ids"], None)


TAGS = {"sport": ["goal", "match", "team"], "music": ["song", "band", "album"], "food": ["pizza", "soup", "cake"]}


def multi_label_rows(n: int = 16) -> list[dict[str, str]]:
    rng = random.Random(3)
    combos = [["sport"], ["music"], ["food"], ["sport", "music"], ["music", "food"], [], ["sport", "food"],
              ["sport", "music", "food"]]
    rows = []
    for i in range(n):
        tags = combos[i % len(combos)]
        words = [w for t in tags for w in rng.sample(TAGS[t], 2)] or ["nothing", "here"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "tags": "|".join(tags)})
    return rows


def test_multi_label_training_overfits_16_rows_and_stores_thresholds(tiny_bert_dir, tmp_path):
    rows = multi_label_rows()
    # mean pooling: a tiny random encoder learns a bag of words much faster than through its [CLS] token
    cfg = TrainConfig(text_column="text", label_column="tags", multi_label=True, encoder=str(tiny_bert_dir),
                      pooling="mean", epochs=15, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, eval_steps=10)
    result = train_classifier(rows, cfg, tmp_path, validation_rows=rows)  # judged on its own training rows
    metrics = result.metrics
    assert result.tasks == {"tags": ["food", "music", "sport"]}
    assert metrics["micro_f1"] == 1.0 and metrics["macro_f1"] == 1.0 and metrics["subset_accuracy"] == 1.0
    assert set(metrics["per_class"]) == {"food", "music", "sport"} and "confusion_matrix" not in metrics
    assert all(set(h) == HISTORY_KEYS | {"micro_f1"} for h in metrics["history"])
    assert len(metrics["thresholds"]) == 3 and all(0 < t < 1 for t in metrics["thresholds"])
    model, _ = load_model(tmp_path)
    assert model.multi_label and model.thresholds == pytest.approx(metrics["thresholds"])
    json.dumps(metrics, allow_nan=False)


def test_pair_training_learns_from_the_second_text(tiny_bert_dir, tmp_path, monkeypatch):
    # the first text is the same everywhere: only the pair text (and its token types) carries the label
    rows = [{"q": "is this good", "a": f"{w} {w}", "label": y}
            for i in range(8) for w, y in ((["great", "fine", "nice", "super"][i % 4], "yes"),
                                            (["awful", "bad", "worst", "poor"][i % 4], "no"))]
    cfg = TrainConfig(text_column="q", text_pair_column="a", label_column="label", encoder=str(tiny_bert_dir),
                      epochs=20, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0)
    model_inputs = []
    real_evaluate = loop.evaluate

    def evaluate(model, data, rows, *args, **kwargs):
        model_inputs.append(data.model_inputs(data.batch(rows), "cpu"))
        return real_evaluate(model, data, rows, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    metrics = train_classifier(rows, cfg, tmp_path, validation_rows=rows).metrics
    types = model_inputs[0]["token_type_ids"]  # (B, T): the model is called with the pair's segments
    assert types.shape == model_inputs[0]["input_ids"].shape and bool((types == 1).any())
    assert metrics["accuracy"] == 1.0 and metrics["confusion_matrix"]["labels"] == ["no", "yes"]
