"""Every model family on tiny random encoders: shapes, learning, save/load, padding, losses, freezing, lrs."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from models.base import IGNORE_INDEX
from models.io import CONFIG_NAME, WEIGHTS_NAME, load_model, save_model
from models.registry import FAMILIES, build_model

SENTENCES = [
    "great flight, thanks!",
    "@united my bag is lost again and nobody at the desk could tell me anything useful at all",
    "meh",
    "The new phone is fine I guess, battery life could be better though.",
]

SINGLE = {"sentiment": ["negative", "neutral", "positive"]}
MULTI = {"sentiment": ["negative", "neutral", "positive"], "topic": ["airline", "apple", "nfl", "other"]}

# (family, options) variants covering every head option
VARIANTS = [
    ("bert", {}),
    ("bert", {"pooling": "cls"}),
    ("bert", {"pooling": "mean"}),
    ("distilbert", {}),
    ("bert_lstm", {"lstm_hidden": 8}),
    ("bert_lstm", {"lstm_hidden": 8, "bidirectional": False}),
    ("multitask", {}),
    ("multitask", {"pooling": "mean", "task_weights": {"sentiment": 2.0, "topic": 0.5}}),
]
IDS = [f"{f}-{'-'.join(f'{k}={v}' for k, v in o.items() if k != 'task_weights') or 'default'}" for f, o in VARIANTS]


def _build(family, options, tiny_bert_dir, tiny_distilbert_dir, **extra):
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    tasks = MULTI if family == "multitask" else SINGLE
    torch.manual_seed(0)
    return build_model(family, tasks, encoder, **{**options, **extra})


def _batch(tokenizer, texts=SENTENCES):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _labels(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = {t: torch.randint(0, len(ls), (n,), generator=g) for t, ls in model.tasks.items()}
    return labels if model.is_multitask else labels[model.task]


def _as_dict(logits, model):
    return logits if isinstance(logits, dict) else {model.task: logits}


@pytest.mark.parametrize("family,options", VARIANTS, ids=IDS)
def test_output_shapes_and_loss(family, options, tiny_bert_dir, tiny_distilbert_dir, tokenizer):
    model = _build(family, options, tiny_bert_dir, tiny_distilbert_dir)
    assert model.family == family and list(model.tasks) == list((MULTI if family == "multitask" else SINGLE))
    assert model.is_multitask == (family == "multitask")
    ids, mask = _batch(tokenizer)
    out = model(ids, mask)
    assert out.loss is None
    for task, logits in _as_dict(out.logits, model).items():
        assert logits.shape == (len(SENTENCES), len(model.tasks[task]))
        assert torch.isfinite(logits).all()
    if family == "multitask":
        assert isinstance(out.logits, dict)
    else:
        assert isinstance(out.logits, torch.Tensor)
    out = model(ids, mask, labels=_labels(model, len(SENTENCES)))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.loss.item() > 0


@pytest.mark.parametrize("family,options", VARIANTS, ids=IDS)
def test_overfits_16_rows(family, options, tiny_bert_dir, tiny_distilbert_dir, tokenizer):
    model = _build(family, options, tiny_bert_dir, tiny_distilbert_dir, dropout=0.0)
    texts = [f"{SENTENCES[i % 4]} number {i}" for i in range(16)]
    ids, mask = _batch(tokenizer, texts)
    labels = _labels(model, 16, seed=1)
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-3, 1e-2, 0.0))
    model.train()
    losses = []
    for _ in range(100):
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.4 * losses[0], losses[::10]


@pytest.mark.parametrize("family,options", VARIANTS, ids=IDS)
def test_save_load_gives_identical_logits(family, options, tiny_bert_dir, tiny_distilbert_dir, tokenizer, tmp_path):
    model = _build(family, options, tiny_bert_dir, tiny_distilbert_dir, class_weights=None)
    with torch.no_grad():  # make the heads non-trivial so a wrong load cannot pass by accident
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.max_length = 64
    model.eval()
    ids, mask = _batch(tokenizer)
    before = _as_dict(model(ids, mask).logits, model)
    save_model(model, tokenizer, tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {CONFIG_NAME, WEIGHTS_NAME, "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl", ".pth")) for name in files)

    loaded, tok2 = load_model(tmp_path / "m")
    assert not loaded.training and loaded.family == family and loaded.tasks == model.tasks
    assert loaded.head_config() == model.head_config() and loaded.max_length == 64
    after = _as_dict(loaded(ids, mask).logits, loaded)
    for task in before:
        assert torch.equal(before[task], after[task])
    assert tok2(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]


@pytest.mark.parametrize("family,options", VARIANTS, ids=IDS)
def test_padding_does_not_change_logits(family, options, tiny_bert_dir, tiny_distilbert_dir, tokenizer):
    model = _build(family, options, tiny_bert_dir, tiny_distilbert_dir).eval()
    short = SENTENCES[2]
    with torch.no_grad():
        ids, mask = _batch(tokenizer, [short])
        alone = _as_dict(model(ids, mask).logits, model)
        ids, mask = _batch(tokenizer, SENTENCES)  # row 2 now carries many padding positions
        batched = _as_dict(model(ids, mask).logits, model)
        extra = torch.zeros((ids.shape[0], 7), dtype=ids.dtype)  # 7 more padding columns for everyone
        more_ids, more_mask = torch.cat([ids, extra + tokenizer.pad_token_id], 1), torch.cat([mask, extra], 1)
        padded = _as_dict(model(more_ids, more_mask).logits, model)
    for task in alone:
        assert (alone[task][0] - batched[task][2]).abs().max().item() < 1e-5
        assert (batched[task] - padded[task]).abs().max().item() < 1e-5


def test_lstm_summary_ignores_padding_in_both_directions(tiny_bert_dir, tokenizer):
    """The bi-LSTM summary equals running the LSTM on the unpadded sequence by hand."""
    model = build_model("bert_lstm", SINGLE, tiny_bert_dir, lstm_hidden=8, bidirectional=True).eval()
    ids, mask = _batch(tokenizer, SENTENCES)
    with torch.no_grad():
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        row = 2
        n = int(mask[row].sum())
        _, (h_n, _) = model.head.lstm(hidden[row : row + 1, :n])  # the real tokens only, no padding at all
        expected = model.head.classifier(torch.cat([h_n[0], h_n[1]], dim=-1))
        got = model(ids, mask).logits[row : row + 1]
    assert (expected - got).abs().max().item() < 1e-5


def test_class_weights_match_weighted_cross_entropy(tiny_bert_dir, tokenizer):
    weights = [0.2, 1.0, 3.0]
    ids, mask = _batch(tokenizer)
    labels = torch.tensor([0, 1, 2, 2])
    torch.manual_seed(0)
    weighted = build_model("bert", SINGLE, tiny_bert_dir, class_weights=weights, dropout=0.0).eval()
    out = weighted(ids, mask, labels=labels)
    expected = F.cross_entropy(out.logits, labels, weight=torch.tensor(weights))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert not torch.allclose(out.loss, F.cross_entropy(out.logits, labels), atol=1e-4)
    assert weighted.class_weights == {"sentiment": weights}
    with pytest.raises(ValueError, match="3 labels"):
        build_model("bert", SINGLE, tiny_bert_dir, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="balanced"):
        build_model("bert", SINGLE, tiny_bert_dir, class_weights="balanced")


def test_class_weights_are_saved(tiny_bert_dir, tokenizer, tmp_path):
    model = build_model("multitask", MULTI, tiny_bert_dir, class_weights={"topic": [1, 2, 3, 4]})
    save_model(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["class_weights"] == {"topic": [1.0, 2.0, 3.0, 4.0]}
    loaded, _ = load_model(tmp_path)
    assert torch.equal(loaded._class_weight_1, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_multitask_missing_labels(tiny_bert_dir, tokenizer):
    weights = {"sentiment": 2.0, "topic": 0.5}
    torch.manual_seed(0)
    model = build_model("multitask", MULTI, tiny_bert_dir, task_weights=weights, dropout=0.0).eval()
    ids, mask = _batch(tokenizer)
    sentiment = torch.tensor([0, IGNORE_INDEX, 2, 1])
    topic = torch.tensor([IGNORE_INDEX, 3, IGNORE_INDEX, 0])
    out = model(ids, mask, labels={"sentiment": sentiment, "topic": topic})
    keep_s, keep_t = sentiment != IGNORE_INDEX, topic != IGNORE_INDEX
    expected = 2.0 * F.cross_entropy(out.logits["sentiment"][keep_s], sentiment[keep_s]) + 0.5 * F.cross_entropy(
        out.logits["topic"][keep_t], topic[keep_t]
    )
    assert torch.allclose(out.loss, expected, atol=1e-6)

    # a batch in which "topic" has no label at all: that task contributes 0, not NaN, and gradients flow
    model.train()
    none = torch.full((4,), IGNORE_INDEX)
    out = model(ids, mask, labels={"sentiment": sentiment, "topic": none})
    assert torch.isfinite(out.loss)
    model.eval()
    with torch.no_grad():
        logits = model(ids, mask).logits
    assert torch.allclose(
        model(ids, mask, labels={"sentiment": sentiment, "topic": none}).loss,
        2.0 * F.cross_entropy(logits["sentiment"][keep_s], sentiment[keep_s]),
        atol=1e-6,
    )
    model.train()
    out.loss.backward()
    assert model.heads.classifiers[0].weight.grad.abs().sum() > 0
    assert model.heads.classifiers[1].weight.grad.abs().sum() == 0

    # nothing labelled anywhere: loss 0, backward still works
    model.zero_grad()
    out = model(ids, mask, labels={"sentiment": none, "topic": none})
    assert out.loss.item() == 0.0
    out.loss.backward()


def test_freeze_encoder_leaves_encoder_unchanged(tiny_bert_dir, tokenizer):
    model = build_model("bert", SINGLE, tiny_bert_dir, freeze_encoder=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = model.parameter_groups(1e-2, 1e-2, 0.01)
    assert all(not g["name"].startswith("encoder") for g in groups)
    optimizer = torch.optim.AdamW(groups)
    model.train()
    assert not model.encoder.training and model.head.training  # frozen encoder: no dropout either
    ids, mask = _batch(tokenizer)
    for _ in range(3):
        model(ids, mask, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_parameter_groups_have_separate_learning_rates(family, tiny_bert_dir, tiny_distilbert_dir):
    model = _build(family, {}, tiny_bert_dir, tiny_distilbert_dir)
    groups = model.parameter_groups(encoder_lr=2e-5, head_lr=1e-3, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    assert by_name["encoder"]["lr"] == by_name["encoder_no_decay"]["lr"] == 2e-5
    assert by_name["head"]["lr"] == by_name["head_no_decay"]["lr"] == 1e-3
    assert by_name["encoder"]["weight_decay"] == 0.05 and by_name["encoder_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim < 2 for p in by_name["head_no_decay"]["params"])
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    assert all(id(p) in encoder_ids for p in by_name["encoder"]["params"] + by_name["encoder_no_decay"]["params"])
    optimizer = torch.optim.AdamW(groups)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [2e-5, 1e-3]


def test_pooling_defaults(tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    from transformers import BertConfig, BertModel

    assert build_model("bert", SINGLE, tiny_bert_dir).pooling == "pooler"
    assert build_model("multitask", MULTI, tiny_distilbert_dir).pooling == "cls"  # DistilBERT has no pooler
    with pytest.raises(ValueError, match="pooler"):
        build_model("multitask", MULTI, tiny_distilbert_dir, pooling="pooler")
    with pytest.raises(ValueError, match="unknown pooling"):
        build_model("bert", SINGLE, tiny_bert_dir, pooling="max")
    # a BERT checkpoint saved without pooler weights: don't pool through a randomly initialised pooler
    no_pooler = BertModel(BertConfig.from_pretrained(tiny_bert_dir), add_pooling_layer=False)
    no_pooler.save_pretrained(tmp_path)
    assert build_model("bert", SINGLE, tmp_path).pooling == "cls"


def test_wrong_encoder_architecture_is_rejected(tiny_bert_dir, tiny_distilbert_dir):
    with pytest.raises(ValueError, match="bert_to_distilbert"):
        build_model("distilbert", SINGLE, tiny_bert_dir)
    with pytest.raises(ValueError, match="use family 'distilbert'"):
        build_model("bert", SINGLE, tiny_distilbert_dir)
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("gpt", SINGLE, tiny_bert_dir)
    with pytest.raises(ValueError, match="no option"):
        build_model("bert", SINGLE, tiny_bert_dir, lstm_hidden=3)
    with pytest.raises(ValueError, match="exactly one task"):
        build_model("bert", MULTI, tiny_bert_dir)
    with pytest.raises(ValueError, match="at least 2 labels"):
        build_model("bert", {"s": ["only"]}, tiny_bert_dir)


def test_the_lstm_heads_run_in_fp32_under_a_half_precision_autocast():
    """Mixed-precision training (bf16 autocast) must not run the LSTM in half precision: CUDA's autocast casts a
    cuDNN RNN to fp16 whatever the autocast dtype, with no loss scaler under bf16. ``packed_lstm`` leaves the
    autocast and runs it on fp32 states (here CPU autocast, the same context a GPU uses)."""
    import torch

    from models.base import packed_lstm

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 4, batch_first=True, bidirectional=True)
    states = torch.randn(3, 5, 8).bfloat16()  # (B, T, H) as a bf16 encoder layer hands them on
    lengths = torch.tensor([5, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, (h_n, c_n) = packed_lstm(lstm, states, lengths)
    assert output.data.dtype == h_n.dtype == c_n.dtype == torch.float32
    reference = packed_lstm(lstm, states.float(), lengths)[1][0]
    torch.testing.assert_close(h_n, reference, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_the_lstm_heads_run_in_fp32_under_cuda_bf16_autocast():
    """On CUDA, where autocast would hand cuDNN's LSTM fp16 tensors: ``packed_lstm`` keeps it in fp32."""
    import torch

    from models.base import packed_lstm

    lstm = torch.nn.LSTM(8, 4, batch_first=True, bidirectional=True).cuda()
    states = torch.randn(3, 5, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output, (h_n, _) = packed_lstm(lstm, states, torch.tensor([5, 2, 3]))
    assert output.data.dtype == h_n.dtype == torch.float32
