"""The BERT -> DistilBERT converter (exactness on the real packaged encoder), encoder resolution, io strictness."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from models import convert
from models.encoders import default_encoder_path, load_encoder, load_tokenizer
from models.io import CONFIG_NAME, load_model, save_model
from models.registry import build_model, resolve_encoder

REAL_SENTENCES = [
    "ok",
    "@SouthwestAir can u get me on flt #3768 instead of #2522 rt now",
    "I can't believe how good the new iPhone camera is, honestly the best upgrade I've made in years!",
    "Patriots fans are still arguing.",
    "Self-driving cars will change how cities are designed, but not before the regulators catch up.",
]


@pytest.mark.slow
def test_default_distilbert_is_an_exact_conversion_of_the_packaged_encoder(tmp_path):
    """Hidden states of the converted DistilBERT equal the BERT encoder's at every non-padding position."""
    path = resolve_encoder("distilbert", None, tmp_path / "cache")
    assert Path(path).parent == tmp_path / "cache"
    assert json.loads((Path(path) / "config.json").read_text())["model_type"] == "distilbert"
    assert (Path(path) / "model.safetensors").is_file()

    bert = load_encoder(default_encoder_path()).eval()
    distil = load_encoder(path).eval()
    assert type(distil).__name__ == "DistilBertModel" and distil.bertqueue_missing_keys == []
    tokenizer = load_tokenizer(path)
    assert "token_type_ids" not in tokenizer(["x"])  # the converted tokenizer feeds DistilBERT directly
    batch = tokenizer(REAL_SENTENCES, padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert len(set(mask.sum(1).tolist())) == len(REAL_SENTENCES)  # all different lengths -> real padding
    with torch.inference_mode():
        a = bert(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        b = distil(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (a[real] - b[real]).abs().max().item() < 1e-5
    assert a.abs().max().item() > 0.1  # a meaningful comparison, not two zero tensors

    # a second resolve reuses the cache instead of converting again
    def boom(*args, **kwargs):
        raise AssertionError("converted twice")

    original = convert.bert_to_distilbert
    convert.bert_to_distilbert = boom
    try:
        assert resolve_encoder("distilbert", "default", tmp_path / "cache") == path
    finally:
        convert.bert_to_distilbert = original


def test_converter_maps_every_weight_and_rejects_inexact_sources(tiny_bert_dir, tmp_path):
    from transformers import BertConfig, BertModel

    out = convert.bert_to_distilbert(tiny_bert_dir, tmp_path / "d")
    marker = json.loads((out / convert.MARKER_NAME).read_text())
    assert marker["verified_max_abs_diff"] < 1e-5
    distil = load_encoder(out)
    bert = load_encoder(tiny_bert_dir)
    assert torch.equal(
        distil.embeddings.position_embeddings.weight,
        bert.embeddings.position_embeddings.weight + bert.embeddings.token_type_embeddings.weight[0],
    )
    assert torch.equal(distil.transformer.layer[1].ffn.lin2.weight, bert.encoder.layer[1].output.dense.weight)

    config = BertConfig.from_pretrained(tiny_bert_dir)
    config.layer_norm_eps = 1e-7
    BertModel(config).save_pretrained(tmp_path / "eps")
    with pytest.raises(ValueError, match="layer_norm_eps"):
        convert.bert_to_distilbert(tmp_path / "eps", tmp_path / "never")
    with pytest.raises(ValueError, match="BERT"):
        convert.bert_to_distilbert(out, tmp_path / "never2")  # already a DistilBERT


def test_conversion_cache_is_atomic_under_a_race(tiny_bert_dir, tmp_path):
    """Two builders racing for the same cache entry both end up with one complete directory, no leftovers."""
    cache = tmp_path / "cache"
    barrier = threading.Barrier(2)
    real = convert.bert_to_distilbert
    results, errors = [], []

    def slow_convert(src, out, **kw):
        barrier.wait(timeout=30)  # both threads are building at the same time
        return real(src, out, **kw)

    def worker():
        try:
            results.append(convert.ensure_converted(tiny_bert_dir, cache, "tiny"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    convert.bert_to_distilbert = slow_convert
    try:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        convert.bert_to_distilbert = real
    assert not errors and results == [cache / "tiny", cache / "tiny"]
    assert (cache / "tiny" / convert.MARKER_NAME).is_file()
    assert sorted(os.listdir(cache)) == ["tiny"]  # the loser's temporary directory was removed
    load_encoder(cache / "tiny")


def test_resolve_encoder(tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    assert resolve_encoder("bert", None) == default_encoder_path()
    assert resolve_encoder("bert_lstm", "default") == default_encoder_path()
    assert resolve_encoder("bert", str(tiny_bert_dir)) == str(tiny_bert_dir.resolve())
    assert resolve_encoder("distilbert", tiny_distilbert_dir) == str(tiny_distilbert_dir.resolve())
    assert resolve_encoder("multitask", tiny_distilbert_dir) == str(tiny_distilbert_dir.resolve())
    with pytest.raises(ValueError, match="bert_to_distilbert"):
        resolve_encoder("distilbert", tiny_bert_dir, tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_encoder("bert", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        resolve_encoder("bert", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="unknown encoder"):
        resolve_encoder("bert", "no-such-org/no-such-model-xyz")
    with pytest.raises(ValueError, match="unknown model family"):
        resolve_encoder("nope", None)


def test_load_needs_no_training_defaults_no_pickle(tiny_bert_dir, tokenizer, tmp_path, monkeypatch):
    model = build_model("bert_lstm", {"s": ["a", "b"]}, tiny_bert_dir, lstm_hidden=6, bidirectional=False, dropout=0.3)
    save_model(model, tokenizer, tmp_path, metadata={"note": "x"})
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["format_version"] == 2 and config["family"] == "bert_lstm"
    assert config["encoder"]["model_type"] == "bert" and config["encoder"]["config"]["hidden_size"] == 32
    assert config["head"] == {
        "dropout": 0.3, "freeze_encoder": False, "multi_label": False, "label_smoothing": 0.0,
        "lstm_hidden": 6, "bidirectional": False,
    }
    assert config["thresholds"] is None  # single-label
    assert config["label2id"] == {"s": {"a": 0, "b": 1}} and config["id2label"] == {"s": {"0": "a", "1": "b"}}
    assert config["metadata"] == {"note": "x"}

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_torch_load)
    os.rename(tiny_bert_dir, tiny_bert_dir.with_name("moved-away"))  # the encoder dir is not needed to load
    try:
        loaded, _ = load_model(tmp_path)
    finally:
        os.rename(tiny_bert_dir.with_name("moved-away"), tiny_bert_dir)
    assert loaded.lstm_hidden == 6 and loaded.bidirectional is False and loaded.dropout_p == 0.3

    # a config missing a head option is refused rather than filled with a code default
    del config["head"]["lstm_hidden"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="head options"):
        load_model(tmp_path)
    config["format_version"] = 99
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="not a saved bertqueue model"):
        load_model(tmp_path / "nothing-here")


def test_a_half_precision_checkpoint_is_loaded_trained_and_saved_in_fp32(tiny_bert_dir, tokenizer, tmp_path):
    """Many published encoders are saved in fp16, and transformers loads a checkpoint in its saved dtype by default
    (from_pretrained and from_config alike): an encoder, and a saved model whose encoder config says fp16, must
    still come back fp32 (the CPU serves fp32; mixed precision is autocast's, over fp32 weights)."""
    import shutil

    from transformers import AutoModel

    half_dir = tmp_path / "half-encoder"
    AutoModel.from_pretrained(str(tiny_bert_dir)).half().save_pretrained(str(half_dir))
    for name in os.listdir(tiny_bert_dir):  # the tokenizer files beside it
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(tiny_bert_dir / name, half_dir / name)
    assert json.loads((half_dir / "config.json").read_text()).get("dtype") == "float16"

    encoder = load_encoder(str(half_dir))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    model = build_model("bert", {"label": ["a", "b"]}, str(half_dir))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    save_model(model, tokenizer, tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / CONFIG_NAME).read_text())
    config["encoder"]["config"]["dtype"] = "float16"  # as an imported model's config may say
    (tmp_path / "saved" / CONFIG_NAME).write_text(json.dumps(config))
    loaded = load_model(tmp_path / "saved")[0]
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
