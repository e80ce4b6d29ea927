"""train_classifier end to end on tiny encoders, data validation, cancellation, batching helpers."""
from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest

from ml import loop
from ml.batches import length_bucketed_batches
from ml.config import TrainConfig, TrainingCancelled, TrainingDataError
from ml.data import balanced_class_weights, prepare_examples, split_indices
from ml.inference import Predictor
from ml.loop import train_classifier
from models.io import CONFIG_NAME, load_model
from tests.accuracy import assert_task_metrics, validation_rows

SHARED_DATASETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"

POSITIVE = ["great", "love", "awesome", "thanks", "best"]
NEGATIVE = ["awful", "hate", "delayed", "lost", "worst"]
NEUTRAL = ["tuesday", "gate", "flight", "schedule", "seat"]
TOPICS = {"airline": "@united plane", "apple": "iphone mac", "nfl": "patriots football"}


def make_rows(n: int = 60, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sentiment = ["negative", "neutral", "positive"][i % 3]
        words = {"negative": NEGATIVE, "neutral": NEUTRAL, "positive": POSITIVE}[sentiment]
        topic = list(TOPICS)[(i // 3) % 3]
        text = f"{' '.join(rng.sample(words, 2))} {TOPICS[topic]}" + " really" * rng.randint(0, 12)
        rows.append({"text": text, "sentiment": sentiment, "topic": topic})
    return rows


def config_for(family: str, **overrides) -> TrainConfig:
    labels = ["sentiment", "topic"] if family == "multitask" else ["sentiment"]
    base = dict(text_column="text", label_columns=labels, family=family, epochs=2, batch_size=8,
                learning_rate=1e-3, validation_split=0.25)
    if family == "bert_lstm":
        base["lstm_hidden"] = 8
    return TrainConfig(**{**base, **overrides})


SINGLE_KEYS = {"accuracy", "macro_f1", "val_loss", "epochs", "train_examples", "validation_examples",
               "train_seconds", "examples_per_second", "labels", "per_class"}
EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds"}


@pytest.mark.parametrize("family", ["bert", "distilbert", "bert_lstm", "multitask"])
def test_train_end_to_end(family, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    calls = []
    result = train_classifier(
        make_rows(), config_for(family, encoder=str(encoder)), tmp_path / "out",
        progress=lambda fraction, info: calls.append((fraction, info)),
        should_stop=lambda: False,
    )
    metrics = result.metrics
    json.dumps(metrics, allow_nan=False)  # JSON-serialisable, no NaN
    assert result.output_dir == tmp_path / "out"
    assert result.tasks["sentiment"] == ["negative", "neutral", "positive"]
    assert metrics["train_examples"] == 45 and metrics["validation_examples"] == 15
    assert len(metrics["epochs"]) == 2 and all(EPOCH_KEYS <= set(e) for e in metrics["epochs"])
    assert metrics["examples_per_second"] > 0 and metrics["train_seconds"] > 0
    if family == "multitask":
        assert result.tasks["topic"] == ["airline", "apple", "nfl"]
        assert set(metrics["tasks"]) == {"sentiment", "topic"}
        for task in ("sentiment", "topic"):
            task_metrics = metrics["tasks"][task]
            assert {"accuracy", "macro_f1", "val_loss", "per_class", "labels"} <= set(task_metrics)
        assert metrics["accuracy"] == pytest.approx(
            (metrics["tasks"]["sentiment"]["accuracy"] + metrics["tasks"]["topic"]["accuracy"]) / 2, abs=1e-6)
        assert set(metrics["epochs"][0]["tasks"]) == {"sentiment", "topic"}
    else:
        assert SINGLE_KEYS <= set(metrics)
        assert set(metrics["per_class"]) == {"negative", "neutral", "positive"}
        assert sum(c["support"] for c in metrics["per_class"].values()) == 15
    best = next(h for h in metrics["history"] if h["step"] == metrics["best_step"])
    assert best["accuracy"] == metrics["accuracy"] and best["macro_f1"] == metrics["macro_f1"]
    assert [h["step"] for h in metrics["history"]] == [6, 12] and metrics["stopped_early"] is False

    # the reported validation metrics are those of the saved model's own predictions on the validation split
    cfg = config_for(family)
    texts, truth = validation_rows(make_rows(), text_column="text", label_columns=cfg.label_columns,
                                   validation_split=cfg.validation_split, seed=cfg.seed, family=family)
    predicted = Predictor.load(tmp_path / "out").predict(texts)
    for task in cfg.label_columns:
        reported = metrics["tasks"][task] if family == "multitask" else metrics
        assert_task_metrics(reported, truth[task], [p["tasks"][task] if family == "multitask" else p
                                                    for p in predicted])

    # progress: monotone fractions in [0, 1], every evaluation reported with the history so far, finishing at 1.0
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    evaluated = [i for _, i in calls if i.get("phase") == "evaluated"]
    assert [i["epoch"] for i in evaluated] == [1, 2] and [len(i["history"]) for i in evaluated] == [1, 2]
    assert all(isinstance(i["eta_seconds"], int) and i["eta_seconds"] >= 0 for i in evaluated)

    # the saved model loads, remembers max_length, and the predictor keeps the input order
    model, _ = load_model(tmp_path / "out")
    assert model.family == family and model.max_length == 128
    predictor = Predictor.load(tmp_path / "out")
    texts = ["love it, great", "awful, lost my bag" + " really" * 30, "tuesday gate", "best best best", "x"]
    batched = predictor.predict(texts, max_batch_tokens=40, max_batch_size=2)
    assert len(batched) == len(texts)
    for text, item in zip(texts, batched):
        alone = predictor.predict([text])[0]
        per_task = item["tasks"] if family == "multitask" else {"sentiment": item}
        alone_tasks = alone["tasks"] if family == "multitask" else {"sentiment": alone}
        for task, res in per_task.items():
            assert set(res["scores"]) == set(result.tasks[task])
            assert math.isclose(sum(res["scores"].values()), 1.0, abs_tol=1e-5)
            assert res["label"] == max(res["scores"], key=res["scores"].get)
            assert res["score"] == res["scores"][res["label"]]
            assert res["scores"] == pytest.approx(alone_tasks[task]["scores"], abs=1e-5)


def test_training_learns_an_easy_task(tiny_bert_dir, tmp_path):
    result = train_classifier(make_rows(90), config_for("bert", encoder=str(tiny_bert_dir), epochs=5,
                                                        learning_rate=5e-3), tmp_path)
    epochs = result.metrics["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert result.metrics["accuracy"] > 0.6  # 3 balanced classes: chance is 1/3


def test_same_seed_same_model(tiny_bert_dir, tmp_path):
    import torch

    rows = make_rows(30)
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=1)
    a = train_classifier(rows, cfg, tmp_path / "a")
    b = train_classifier(rows, cfg, tmp_path / "b")
    assert a.metrics["epochs"][0]["train_loss"] == b.metrics["epochs"][0]["train_loss"]
    ma, _ = load_model(tmp_path / "a")
    mb, _ = load_model(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_multitask_rows_with_missing_labels(tiny_bert_dir, tmp_path):
    rows = make_rows(60)
    for i, row in enumerate(rows):
        if i % 4 == 0:
            row["topic"] = ""
        elif i % 4 == 1:
            row["sentiment"] = " "
    rows.append({"text": "no labels at all", "sentiment": "", "topic": ""})
    rows.append({"text": "   ", "sentiment": "positive", "topic": "nfl"})
    result = train_classifier(rows, config_for("multitask", encoder=str(tiny_bert_dir), epochs=1,
                                               task_weights={"topic": 0.5}), tmp_path)
    assert result.metrics["skipped_rows"] == {"empty_text": 1, "no_label": 1}
    assert result.metrics["train_examples"] + result.metrics["validation_examples"] == 60
    val = result.metrics["tasks"]
    assert val["sentiment"]["validation_examples"] < 15 and val["topic"]["validation_examples"] < 15
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["head"]["task_weights"] == {"sentiment": 1.0, "topic": 0.5}


def test_balanced_class_weights_are_computed_and_saved(tiny_bert_dir, tmp_path):
    rows = make_rows(60)
    rows += [{"text": f"great love {i}", "sentiment": "positive", "topic": "nfl"} for i in range(30)]
    cfg = config_for("bert", encoder=str(tiny_bert_dir), epochs=1, class_weights="balanced")
    result = train_classifier(rows, cfg, tmp_path)
    weights = result.metrics["class_weights"]["sentiment"]
    assert weights[2] < weights[0] and weights[0] == pytest.approx(weights[1], rel=0.2)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["class_weights"] == {"sentiment": weights}
    assert balanced_class_weights([0, 0, 0, 1, -100], 3) == [pytest.approx(4 / 9), pytest.approx(4 / 3), 1.0]


def test_no_validation_split(tiny_bert_dir, tmp_path):
    cfg = config_for("bert_lstm", encoder=str(tiny_bert_dir), epochs=1, validation_split=0.0, freeze_encoder=True)
    result = train_classifier(make_rows(20), cfg, tmp_path)
    assert result.metrics["validation_examples"] == 0 and result.metrics["train_examples"] == 20
    assert result.metrics["accuracy"] is None and result.metrics["epochs"][0]["val_loss"] is None
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["head"]["freeze_encoder"] is True


@pytest.mark.parametrize(
    "rows,overrides,message",
    [
        ([{"text": f"t{i}", "sentiment": "pos"} for i in range(30)], {}, "only one label"),
        ([{"text": f"t{i}", "sentiment": "pos" if i % 2 else "neg"} for i in range(5)], {}, "at least 10 rows"),
        (make_rows(), {"text_column": "body"}, "column 'body' not found"),
        ([], {}, "no rows"),
        (make_rows(), {"class_weights": [1.0, 2.0]}, "in this order: negative, neutral, positive"),
        ([{"text": f"t{i}", "sentiment": ["a", "b"][i % 2], "topic": ""} for i in range(30)],
         {"family": "multitask", "label_columns": ["sentiment", "topic"]}, "column 'topic' has no labels"),
    ],
)
def test_bad_data_raises_training_data_error(rows, overrides, message, tiny_bert_dir, tmp_path):
    cfg = config_for(overrides.pop("family", "bert"), encoder=str(tiny_bert_dir), **overrides)
    with pytest.raises(TrainingDataError, match=message):
        train_classifier(rows, cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_encoder_is_a_training_data_error(tiny_bert_dir, tmp_path):
    with pytest.raises(TrainingDataError, match="bert_to_distilbert"):
        train_classifier(make_rows(), config_for("distilbert", encoder=str(tiny_bert_dir)), tmp_path)


def test_should_stop_cancels_mid_training(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "PROGRESS_INTERVAL_S", 0.0)  # poll at every step
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) >= 4

    steps = []
    with pytest.raises(TrainingCancelled):
        train_classifier(make_rows(), config_for("bert", encoder=str(tiny_bert_dir), epochs=3), tmp_path / "out",
                         progress=lambda f, info: steps.append(info.get("step")), should_stop=should_stop)
    assert len(polls) == 4 and max(s for s in steps if s) < 18  # stopped early (18 steps in the full run)
    assert not (tmp_path / "out").exists()  # nothing saved


def test_split_and_batching_helpers():
    labels = [0] * 30 + [1] * 10
    train, val, stratified = split_indices(labels, 0.25, seed=1)
    assert stratified and sorted(train + val) == list(range(40)) and len(val) == 10
    assert sum(labels[i] for i in val) in (2, 3)  # class ratio kept (25% of 10)
    assert split_indices(labels, 0.25, seed=1) == (train, val, stratified)  # seeded
    _, _, stratified = split_indices([0] * 20 + [1], 0.2, seed=1)
    assert not stratified  # a class with a single row cannot be stratified

    lengths = [random.Random(i).randint(1, 60) for i in range(500)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0), chunk_batches=4)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) <= 16 for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    naive = sum(16 * max(lengths[i] for i in range(s, min(s + 16, 500))) for s in range(0, 500, 16))
    assert padded < 0.8 * naive  # bucketing saves padding
    assert batches != length_bucketed_batches(lengths, 16, random.Random(1), chunk_batches=4)


def test_prepare_examples_sorts_labels():
    rows = [{"text": f"t{i}", "y": ["zeta", "alpha", "mid"][i % 3]} for i in range(12)]
    examples = prepare_examples(rows, TrainConfig(text_column="text", label_columns=["y"]))
    assert examples.tasks == {"y": ["alpha", "mid", "zeta"]}
    assert examples.labels["y"][:3] == [2, 0, 1]


@pytest.mark.skipif(not (SHARED_DATASETS / "tweets_multitask.csv").is_file(), reason="../shared/datasets not present")
def test_real_tweets_multitask_smoke(tiny_bert_dir, tmp_path):
    with open(SHARED_DATASETS / "tweets_multitask.csv", newline="", encoding="utf-8") as f:
        rows = [row for _, row in zip(range(200), csv.DictReader(f))]
    result = train_classifier(rows, config_for("multitask", encoder=str(tiny_bert_dir), epochs=1, validation_split=0.1),
                              tmp_path)
    assert set(result.tasks) == {"sentiment", "topic"} and len(result.tasks["topic"]) >= 2
    assert result.metrics["tasks"]["sentiment"]["validation_examples"] == 20


def test_labels_longer_than_the_label_column_are_refused_before_training():
    from core.schema import LABEL_MAX
    from ml.config import TrainConfig, TrainingDataError
    from ml.data import prepare_examples

    rows = [{"text": f"t{i}", "label": ("x" * (LABEL_MAX + 1)) if i % 2 else "short"} for i in range(12)]
    config = TrainConfig(text_column="text", label_columns=["label"])
    with pytest.raises(TrainingDataError, match=f"longer than {LABEL_MAX} characters"):
        prepare_examples(rows, config)
