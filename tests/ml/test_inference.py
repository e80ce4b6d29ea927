"""Predictor batching and the per-process predictor cache."""
from __future__ import annotations

import os
import threading
import time

import pytest

from ml import inference
from ml.batching import token_budget_batches
from ml.inference import Predictor, clear_predictor_cache, get_predictor
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


# ------------------------------------------------------------------------------------ multi-label and pairs

PAIRS = [("the flight was delayed", "I missed my connection"), ("great crew", "the seat was broken"),
         ("@united lost my bag", "https://t.co/abc please help")]


def _sharpen(model):
    """Perturb every weight (seeded, std 0.2): the tiny random encoders give nearly the same output for every
    input; perturbed, their probabilities differ clearly between inputs, so comparisons below mean something."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


def _manual_probs(model, tokenizer, texts, pairs=None, *, sigmoid=False, use_types=True):
    """Probabilities of a direct forward on the tokenizer's own pair encoding (what predict must reproduce)."""
    import torch

    out = []
    for i, text in enumerate(texts):
        enc = tokenizer([text], [pairs[i]] if pairs else None, truncation="longest_first",
                        max_length=model.max_length, return_tensors="pt")
        types = {"token_type_ids": enc["token_type_ids"]} if use_types and pairs and "token_type_ids" in enc else {}
        with torch.no_grad():
            logits = model(enc["input_ids"], enc["attention_mask"], **types).logits[0]
        out.append((torch.sigmoid(logits) if sigmoid else torch.softmax(logits, -1)).tolist())
    return out


def test_multi_label_predict_uses_the_stored_thresholds(tiny_bert_dir, tokenizer, tmp_path):
    import torch

    labels = ["billing", "delay", "food", "staff"]
    torch.manual_seed(3)
    model = _sharpen(build_model("bert", {"topics": labels}, tiny_bert_dir, multi_label=True).eval())
    model.max_length = 32
    texts = [a for a, _ in PAIRS]
    probs = _manual_probs(model, tokenizer, texts, sigmoid=True)
    # thresholds just below / just above the first text's probabilities: labels 0 and 2 pass, 1 and 3 do not.
    # (Not exactly at them: a batched forward on 2 threads may round the last bit differently from this
    # one-text forward; a probability equal to its threshold passing is checked on _multi_label_result below.)
    first = probs[0]
    model.thresholds = [max(0.0, first[0] - 1e-4), min(1.0, first[1] + 1e-3), max(0.0, first[2] - 1e-4),
                        min(1.0, first[3] + 1e-3)]
    save_model(model, tokenizer, tmp_path / "ml")
    predictor = Predictor.load(tmp_path / "ml")
    assert predictor.multi_label and predictor.thresholds == model.thresholds
    results = predictor.predict(texts)
    assert [labels[c] for c in (0, 2)] == sorted(results[0]["labels"], key=labels.index)
    for result, p in zip(results, probs):
        assert set(result) == {"labels", "scores", "label", "score"}
        assert [result["scores"][label] for label in labels] == pytest.approx(p, abs=1e-5)
        expected = [label for c, label in enumerate(labels) if p[c] >= model.thresholds[c] - 1e-6]
        assert sorted(result["labels"]) == sorted(expected)
        assert [result["scores"][label] for label in result["labels"]] == sorted(
            (result["scores"][label] for label in result["labels"]), reverse=True)  # most likely first
        top = max(range(4), key=p.__getitem__)
        assert result["label"] == labels[top] and result["score"] == pytest.approx(p[top], abs=1e-5)
    # the same model with every threshold at 1.0 predicts no label (thresholds really come from the saved config)
    model.thresholds = [1.0] * 4
    save_model(model, tokenizer, tmp_path / "strict")
    assert all(r["labels"] == [] for r in Predictor.load(tmp_path / "strict").predict(texts))


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_pairs_predict_equals_a_manual_forward(family, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    from models.encoders import load_tokenizer

    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    tokenizer = load_tokenizer(encoder)
    model = _sharpen(build_model(family, {"s": ["a", "b", "c"]}, encoder).eval())
    model.max_length = 12  # short: long pairs get truncated, longer text first
    save_model(model, tokenizer, tmp_path / "pairs", metadata={"training": {"text_pair_column": "b"}})
    predictor = Predictor.load(tmp_path / "pairs")
    assert predictor.text_pair_column == "b"
    texts, pairs = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    results = predictor.predict(texts, pairs)
    manual = _manual_probs(model, tokenizer, texts, pairs)
    for result, p in zip(results, manual):
        assert [result["scores"][label] for label in "abc"] == pytest.approx(p, abs=1e-6)
    rows = predictor.encode(texts, pairs=pairs)
    assert all(isinstance(row, inference.PairRow) for row in rows) == (family == "bert")
    swapped = predictor.predict(pairs, texts)
    assert any(r["scores"] != pytest.approx(s["scores"], abs=1e-3) for r, s in zip(results, swapped))
    if family == "bert":  # the token type ids made a difference: without them the manual forward differs
        plain = _manual_probs(model, tokenizer, texts, pairs, use_types=False)
        assert any(r["scores"] != pytest.approx(dict(zip("abc", q)), abs=1e-3) for r, q in zip(results, plain))
    with pytest.raises(ValueError, match="one pair text per text"):
        predictor.predict(texts, pairs[:2])


def test_texts_are_normalized_as_in_training(tiny_bert_dir, tokenizer, tmp_path):
    model = build_model("bert", {"s": ["a", "b"]}, tiny_bert_dir).eval()
    model.max_length = 32
    save_model(model, tokenizer, tmp_path / "social", metadata={"training": {"text_normalization": "social"}})
    save_model(model, tokenizer, tmp_path / "plain")
    social, plain = Predictor.load(tmp_path / "social"), Predictor.load(tmp_path / "plain")
    raw = ["@united my bag https://t.co/x1"]
    assert social.encode(raw) == plain.encode(["@user my bag http"]) != plain.encode(raw)


def test_engine_batches_pairs_and_single_texts_together(tiny_bert_dir, tokenizer, tmp_path):
    from ml.batching import BatchingEngine

    model = _sharpen(build_model("bert", {"s": ["a", "b", "c"]}, tiny_bert_dir).eval())
    model.max_length = 32
    save_model(model, tokenizer, tmp_path / "m")
    predictor, reference = Predictor.load(tmp_path / "m"), Predictor.load(tmp_path / "m")
    batches, entered, release = [], threading.Event(), threading.Event()
    real_forward = predictor.forward

    def forward(rows):
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
        batches.append(list(rows))
        return real_forward(rows)

    predictor.forward = forward
    engine = BatchingEngine(predictor, wait_ms=0)
    blocker = engine.submit(["blocker"])
    assert entered.wait(30)  # the loop is inside the first batch: the next requests queue up together
    texts, pairs = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    pair_future = engine.submit(texts, pairs)
    single_future = engine.submit(texts)
    release.set()
    pair_results = predictor.results(pair_future.result(timeout=30))
    single_results = predictor.results(single_future.result(timeout=30))
    blocker.result(timeout=30)
    mixed = [b for b in batches if any(isinstance(r, inference.PairRow) for r in b)
             and any(not isinstance(r, inference.PairRow) for r in b)]
    assert mixed, batches  # pairs and single texts really shared a forward pass
    for got, want in zip(pair_results, reference.predict(texts, pairs)):
        assert got["label"] == want["label"] and got["scores"] == pytest.approx(want["scores"], abs=1e-5)
    for got, want in zip(single_results, reference.predict(texts)):
        assert got["label"] == want["label"] and got["scores"] == pytest.approx(want["scores"], abs=1e-5)
    again = engine.predict(texts, pairs)  # the blocking call, alone this time
    for got, want in zip(again, pair_results):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_a_probability_equal_to_its_threshold_passes():
    from ml.text_classification import _multi_label_result

    result = _multi_label_result(["a", "b", "c"], [0.25, 0.7, 0.5], [0.25, 0.7000001, 0.9])
    assert result["labels"] == ["a"] and result["label"] == "b"


def test_the_cache_builds_each_models_engine_with_the_options_it_is_given(saved_models):
    from ml.batching import EngineOptions

    options = EngineOptions(wait_ms=0.5, max_batch_tokens=512, max_batch_size=3)
    predictor = get_predictor(saved_models[0], engine_options=options)
    engine = predictor.engine
    assert (engine.wait_s, engine.max_batch_tokens, engine.max_batch_size) == (0.0005, 512, 3)
    # one engine per loaded model: later lookups (with other options, or none) get the same one
    assert get_predictor(saved_models[0], engine_options=EngineOptions()).engine is engine
    assert get_predictor(saved_models[0]).engine is engine
    # a predictor loaded by hand gets the default options on first use
    defaults = Predictor.load(saved_models[1]).engine
    assert (defaults.max_batch_tokens, defaults.max_batch_size) == (8192, 64)
