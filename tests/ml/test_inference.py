"""Predictor batching and the per-process predictor cache."""
from __future__ import annotations

import os
import threading
import time

import pytest

from ml import inference
from ml.inference import Predictor, clear_predictor_cache, get_predictor, token_budget_batches
from models.io import CONFIG_NAME, save_model
from models.registry import build_model


@pytest.fixture
def saved_models(tiny_bert_dir, tokenizer, tmp_path):
    """Three small saved models (single-task bert, multitask, bert_lstm)."""
    dirs = []
    for i, (family, tasks) in enumerate([
        ("bert", {"s": ["a", "b", "c"]}),
        ("multitask", {"s": ["a", "b"], "t": ["x", "y", "z"]}),
        ("bert_lstm", {"s": ["a", "b"]}),
    ]):
        options = {"lstm_hidden": 4} if family == "bert_lstm" else {}
        model = build_model(family, tasks, tiny_bert_dir, **options)
        model.max_length = 16
        dirs.append(save_model(model, tokenizer, tmp_path / f"m{i}"))
    clear_predictor_cache()
    yield dirs
    clear_predictor_cache()


def test_token_budget_batches():
    lengths = [50, 3, 20, 20, 7, 100, 1]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches = token_budget_batches(order, lengths, max_tokens=60, max_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # longer than the budget on its own: still served, alone
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60


def test_predict_order_truncation_and_formats(saved_models):
    single = Predictor.load(saved_models[0])
    assert single.family == "bert" and single.tasks == {"s": ["a", "b", "c"]} and not single.is_multitask
    assert single.max_length == 16
    texts = [f"text number {i} " + "word " * (i * 7 % 40) for i in range(25)]
    small = single.predict(texts, max_batch_tokens=64, max_batch_size=4)
    big = single.predict(texts, max_batch_tokens=100_000, max_batch_size=1000)
    one_by_one = [single.predict([t])[0] for t in texts]
    for a, b, c in zip(small, big, one_by_one):
        assert set(a) == {"label", "score", "scores"} and a["label"] in ("a", "b", "c")
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5) == c["scores"]
        assert sum(a["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    # truncation at the training max_length: a long tail does not change the result
    assert single.predict(["same start " * 30])[0]["scores"] == pytest.approx(
        single.predict(["same start " * 30 + "completely different ending " * 20])[0]["scores"], abs=1e-6)
    assert single.predict([]) == []
    with pytest.raises(TypeError):
        single.predict("not a list")

    multi = Predictor.load(saved_models[1])
    assert multi.is_multitask
    (item,) = multi.predict(["hello"])
    assert set(item) == {"tasks"} and set(item["tasks"]) == {"s", "t"}
    assert set(item["tasks"]["t"]["scores"]) == {"x", "y", "z"}


def test_get_predictor_caches_reloads_and_evicts(saved_models, monkeypatch):
    p0 = get_predictor(saved_models[0])
    assert get_predictor(str(saved_models[0])) is p0
    assert get_predictor(saved_models[0] / ".." / saved_models[0].name) is p0  # keyed by the resolved path

    # re-saving the model (config mtime changes) loads it again
    config = saved_models[0] / CONFIG_NAME
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    p0b = get_predictor(saved_models[0])
    assert p0b is not p0 and len(inference._cache) == 1

    monkeypatch.setattr(inference, "CACHE_SIZE", 2)
    p1 = get_predictor(saved_models[1])
    get_predictor(saved_models[0])  # touch m0: m1 is now the least recently used
    get_predictor(saved_models[2])
    assert len(inference._cache) == 2
    assert get_predictor(saved_models[0]) is p0b
    assert get_predictor(saved_models[1]) is not p1  # was evicted, so loaded anew

    with pytest.raises(ValueError, match="not a saved bertqueue model"):
        get_predictor(saved_models[0].parent / "missing")


def test_get_predictor_is_thread_safe(saved_models, monkeypatch):
    loads = []
    real_load = Predictor.load.__func__

    def slow_load(cls, model_dir, device="cpu", **options):
        loads.append(model_dir)
        time.sleep(0.2)  # make the threads overlap
        return real_load(cls, model_dir, device, **options)

    monkeypatch.setattr(Predictor, "load", classmethod(slow_load))
    results, errors = [], []

    def worker():
        try:
            predictor = get_predictor(saved_models[2])
            results.append((predictor, predictor.predict(["concurrent text"])[0]["label"]))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(loads) == 1
    assert len({id(p) for p, _ in results}) == 1 and len({label for _, label in results}) == 1
