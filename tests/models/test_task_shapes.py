"""Multi-label heads, label smoothing, sentence pairs (token type ids), saved-config compatibility, import graph."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models import packed
from models.io import CONFIG_NAME, load_model, save_model
from models.registry import build_model

LABELS = {"topics": ["billing", "delay", "food", "staff"]}
SINGLE = {"sentiment": ["negative", "neutral", "positive"]}
TEXTS = [
    "the flight was late and the food was cold",
    "friendly crew",
    "they charged my card twice",
    "ok",
]
TARGETS = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
MULTI_LABEL_FAMILIES = ["bert", "distilbert", "bert_lstm"]


def _encoder(family, tiny_bert_dir, tiny_distilbert_dir):
    return tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir


def _batch(tokenizer, texts=TEXTS, pairs=None):
    enc = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _module_imports(path: Path) -> set[str]:
    """The sibling modules of the ``models`` package that ``path`` imports (at top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("models."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("models."))
    return found


def test_models_import_graph_has_no_cycle():
    """Every import between modules of ``models`` (lazy ones included) goes one way: the graph is acyclic."""
    package = Path(__file__).resolve().parents[2] / "models"
    graph = {p.stem: _module_imports(p) for p in package.glob("*.py") if p.stem != "__init__"}
    assert "registry" not in graph["encoders"] and "convert" not in graph["encoders"]

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for child in sorted(graph.get(node, ())):
            visit(child, [*stack, node])

    for module in graph:
        visit(module, [])


# ---------------------------------------------------------------------------------------------- multi-label


@pytest.mark.parametrize("family", MULTI_LABEL_FAMILIES)
def test_multi_label_loss_is_bce_with_pos_weight(family, tiny_bert_dir, tiny_distilbert_dir, tokenizer):
    encoder = _encoder(family, tiny_bert_dir, tiny_distilbert_dir)
    pos_weight = [1.0, 3.0, 0.5, 2.0]
    torch.manual_seed(0)
    model = build_model(family, LABELS, encoder, multi_label=True, class_weights=pos_weight, dropout=0.0).eval()
    assert model.multi_label and model.thresholds == [0.5] * 4
    ids, mask = _batch(tokenizer)
    out = model(ids, mask, labels=TARGETS)
    assert out.logits.shape == (4, 4)
    expected = F.binary_cross_entropy_with_logits(out.logits, TARGETS, pos_weight=torch.tensor(pos_weight))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    unweighted = F.binary_cross_entropy_with_logits(out.logits, TARGETS)
    assert not torch.allclose(out.loss, unweighted, atol=1e-4)  # the weights really act
    # integer 0/1 targets work too (cast to float); a wrong shape is a clear error
    assert torch.allclose(model(ids, mask, labels=TARGETS.long()).loss, expected, atol=1e-6)
    with pytest.raises(ValueError, match="rows x labels"):
        model(ids, mask, labels=torch.tensor([0, 1, 2, 3]))


def test_multi_label_overfits_16_rows(tiny_bert_dir, tokenizer):
    torch.manual_seed(0)
    model = build_model("bert", LABELS, tiny_bert_dir, multi_label=True, dropout=0.0)
    texts = [f"{TEXTS[i % 4]} number {i}" for i in range(16)]
    targets = torch.stack([TARGETS[i % 4] for i in range(16)])
    ids, mask = _batch(tokenizer, texts)
    optimizer = torch.optim.AdamW(model.parameter_groups(3e-3, 3e-2, 0.0))
    model.train()
    for _ in range(90):
        loss = model(ids, mask, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        predicted = (torch.sigmoid(model(ids, mask).logits) >= torch.tensor(model.thresholds)).float()
    assert torch.equal(predicted, targets)


def test_multi_label_refused_where_unsupported(tiny_bert_dir):
    with pytest.raises(ValueError, match="single-label tasks only"):
        build_model("multitask", {**SINGLE, **LABELS}, tiny_bert_dir, multi_label=True)
    assert build_model("multitask", {**SINGLE, **LABELS}, tiny_bert_dir, multi_label=False).thresholds is None
    with pytest.raises(ValueError, match="label_smoothing"):
        build_model("bert", LABELS, tiny_bert_dir, multi_label=True, label_smoothing=0.1)


def test_thresholds_are_validated(tiny_bert_dir):
    model = build_model("bert", LABELS, tiny_bert_dir, multi_label=True)
    model.thresholds = [0.2, 0.4, 0.6, 0.8]
    assert model.thresholds == [0.2, 0.4, 0.6, 0.8]
    for bad in ([0.5, 0.5], [0.5, 0.5, 0.5, 1.5], [0.5, 0.5, 0.5, float("nan")], "0.5"):
        with pytest.raises(ValueError, match="thresholds"):
            model.thresholds = bad
    model.thresholds = None
    assert model.thresholds == [0.5] * 4  # back to the default
    single = build_model("bert", SINGLE, tiny_bert_dir)
    assert single.thresholds is None
    with pytest.raises(ValueError, match="multi_label"):
        single.thresholds = [0.5, 0.5, 0.5]


@pytest.mark.parametrize("family", MULTI_LABEL_FAMILIES)
def test_thresholds_saved_and_loaded(family, tiny_bert_dir, tiny_distilbert_dir, tokenizer, tmp_path):
    model = build_model(family, LABELS, _encoder(family, tiny_bert_dir, tiny_distilbert_dir), multi_label=True)
    model.thresholds = [0.25, 0.5, 0.75, 0.9]
    model.eval()
    save_model(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["thresholds"] == [0.25, 0.5, 0.75, 0.9]
    assert config["head"]["multi_label"] is True
    loaded, _ = load_model(tmp_path)
    assert loaded.multi_label and loaded.thresholds == [0.25, 0.5, 0.75, 0.9]
    ids, mask = _batch(tokenizer)
    assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)
    # a multi-label config written without thresholds gets the default 0.5 per label
    del config["thresholds"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    assert load_model(tmp_path)[0].thresholds == [0.5] * 4


def test_format_1_models_still_load(tiny_bert_dir, tokenizer, tmp_path):
    """A model saved before multi-label existed (format 1: no multi_label/label_smoothing/thresholds) loads as is."""
    model = build_model("bert", SINGLE, tiny_bert_dir, dropout=0.2).eval()
    save_model(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["format_version"] = 1
    del config["head"]["multi_label"], config["head"]["label_smoothing"], config["thresholds"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    loaded, _ = load_model(tmp_path)
    assert not loaded.multi_label and loaded.label_smoothing == 0.0 and loaded.thresholds is None
    ids, mask = _batch(tokenizer)
    assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)
    # format 2 must list every head option
    config["format_version"] = 2
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="head options"):
        load_model(tmp_path)


# ---------------------------------------------------------------------------------------------- label smoothing


@pytest.mark.parametrize("family", ["bert", "multitask"])
def test_label_smoothing_matches_smoothed_cross_entropy(family, tiny_bert_dir, tokenizer, tmp_path):
    tasks = {**SINGLE, **LABELS} if family == "multitask" else SINGLE
    torch.manual_seed(0)
    model = build_model(family, tasks, tiny_bert_dir, label_smoothing=0.1, dropout=0.0).eval()
    with torch.no_grad():  # confident logits, so that smoothing makes a visible difference
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    ids, mask = _batch(tokenizer)
    sentiment = torch.tensor([0, 1, 2, 2])
    labels = {"sentiment": sentiment} if family == "multitask" else sentiment
    out = model(ids, mask, labels=labels)
    logits = out.logits["sentiment"] if family == "multitask" else out.logits
    expected = F.cross_entropy(logits, sentiment, label_smoothing=0.1)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert not torch.allclose(out.loss, F.cross_entropy(logits, sentiment), atol=1e-4)
    save_model(model, tokenizer, tmp_path)
    assert load_model(tmp_path)[0].label_smoothing == 0.1
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            build_model("bert", SINGLE, tiny_bert_dir, label_smoothing=bad)


# ---------------------------------------------------------------------------------------------- sentence pairs


@pytest.mark.parametrize("family", ["bert", "bert_lstm", "multitask"])
def test_token_type_ids_reach_a_bert_encoder(family, tiny_bert_dir, tokenizer, monkeypatch):
    tasks = {**SINGLE, **LABELS} if family == "multitask" else SINGLE
    options = {"lstm_hidden": 8} if family == "bert_lstm" else {}
    model = build_model(family, tasks, tiny_bert_dir, **options).eval()
    assert model.takes_token_types
    enc = tokenizer(["the bag", "a seat"], ["was lost", "was broken"], padding=True, return_tensors="pt")
    assert enc["token_type_ids"].max() == 1  # the tokenizer marks the second text

    def logits(**types):
        with torch.no_grad():
            out = model(enc["input_ids"], enc["attention_mask"], **types).logits
        return out["sentiment"] if isinstance(out, dict) else out

    # inference takes the packed forward (models/packed.py): segment embeddings change the representation
    assert not torch.allclose(logits(token_type_ids=enc["token_type_ids"]), logits(), atol=1e-6)
    # the encoder's own forward (training, or packing unusable) is handed the types as given
    monkeypatch.setattr(packed, "usable", lambda *a: False)
    seen = []
    model.encoder.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("token_type_ids")),
                                            with_kwargs=True)
    with_types, without = logits(token_type_ids=enc["token_type_ids"]), logits()
    assert seen[0] is enc["token_type_ids"] and seen[1] is None
    assert not torch.allclose(with_types, without, atol=1e-6)


def test_pair_order_matters_for_bert(tiny_bert_dir, tokenizer):
    model = build_model("bert", SINGLE, tiny_bert_dir).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the tiny random encoder answers almost alike for every input: make it input-sensitive
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    a, b = "the flight was delayed", "I missed my connection"

    def logits(first, second):
        enc = tokenizer([first], [second], return_tensors="pt")
        with torch.no_grad():
            return model(enc["input_ids"], enc["attention_mask"], token_type_ids=enc["token_type_ids"]).logits

    assert not torch.allclose(logits(a, b), logits(b, a), atol=1e-2)
    assert torch.equal(logits(a, b), logits(a, b))


def test_distilbert_ignores_token_type_ids(tiny_distilbert_dir, tokenizer):
    model = build_model("distilbert", SINGLE, tiny_distilbert_dir).eval()
    assert not model.takes_token_types
    enc = tokenizer(["the bag"], ["was lost"], return_tensors="pt")  # BERT tokenizer: has token types
    with torch.no_grad():
        with_types = model(enc["input_ids"], enc["attention_mask"], token_type_ids=enc["token_type_ids"]).logits
        without = model(enc["input_ids"], enc["attention_mask"]).logits
    assert torch.equal(with_types, without)
