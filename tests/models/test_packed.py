"""models/packed.py: the padding-free inference forward answers exactly what the encoder's own forward answers."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from models import packed
from models.registry import FAMILIES, build_model
from tests.models.test_families import IDS, MULTI, SENTENCES, SINGLE, VARIANTS

PAIRS = [("the flight was late", "they lost my bag"), ("ok", "a much longer second text that pads the first")]


def _encoder(directory):
    torch.manual_seed(0)
    return AutoModel.from_pretrained(str(directory)).eval()


def _real_positions_match(reference, got, mask):
    real = mask.bool()
    assert torch.allclose(got.last_hidden_state[real], reference.last_hidden_state[real], atol=1e-5)
    assert (got.last_hidden_state[~real] == 0).all()  # padding holds zeros, never another row's states


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_packed_forward_equals_the_encoders_own_on_every_real_token(kind, tiny_bert_dir, tiny_distilbert_dir,
                                                                     tokenizer):
    encoder = _encoder(tiny_bert_dir if kind == "bert" else tiny_distilbert_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert packed.supports(encoder)
    with torch.inference_mode():
        assert packed.usable(encoder, mask)
        reference = encoder(input_ids=ids, attention_mask=mask)
        got = packed.packed_forward(encoder, ids, mask)
    _real_positions_match(reference, got, mask)
    if kind == "bert":
        assert torch.allclose(got.pooler_output, reference.pooler_output, atol=1e-5)
    else:
        assert got.pooler_output is None


def test_sentence_pairs_and_left_padding_keep_their_segments_and_positions(tiny_bert_dir, tokenizer):
    encoder = _encoder(tiny_bert_dir)
    for side in ("right", "left"):
        tokenizer.padding_side = side
        try:
            batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = "right"
        assert batch["token_type_ids"].max() == 1
        with torch.inference_mode():
            reference = encoder(**batch)
            got = packed.packed_forward(encoder, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        _real_positions_match(reference, got, batch["attention_mask"])
        if side == "right":  # the platform's side; left-padded rows have a pad, not [CLS], at the pooler's position 0
            assert torch.allclose(got.pooler_output, reference.pooler_output, atol=1e-5)


@pytest.mark.parametrize("family,options", VARIANTS, ids=IDS)
def test_every_family_predicts_the_same_with_and_without_packing(family, options, tiny_bert_dir,
                                                                 tiny_distilbert_dir, tokenizer, monkeypatch):
    torch.manual_seed(0)
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    model = build_model(family, MULTI if family == "multitask" else SINGLE, encoder, **options).eval()
    real_forward, real_usable = packed.packed_forward, packed.usable
    for texts in (SENTENCES, SENTENCES[:1]):  # a padded batch, and one text (no padding)
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        calls = []
        monkeypatch.setattr(packed, "packed_forward", lambda *a, **k: calls.append(k) or real_forward(*a, **k))
        with torch.inference_mode():
            got = model(batch["input_ids"], batch["attention_mask"]).logits
            assert calls, "inference should take the packed path"
            # a head that reads [CLS] alone (the pooler, "cls") lets the last layer run on that position only
            assert calls[0]["first_only"] == (family in ("bert", "distilbert", "multitask")
                                              and options.get("pooling") != "mean")
            monkeypatch.setattr(packed, "usable", lambda *a: False)
            reference = model(batch["input_ids"], batch["attention_mask"]).logits
        monkeypatch.setattr(packed, "usable", real_usable)
        got, reference = (x if isinstance(x, dict) else {"t": x} for x in (got, reference))
        for task in reference:
            assert torch.allclose(got[task], reference[task], atol=1e-5), task


def test_an_int8_model_on_the_packed_path_answers_within_quantization_noise(tiny_bert_dir, tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = build_model("bert", SINGLE, tiny_bert_dir).eval()
    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        got = model(batch["input_ids"], batch["attention_mask"]).logits
        monkeypatch.setattr(packed, "usable", lambda *a: False)
        reference = model(batch["input_ids"], batch["attention_mask"]).logits
    # dynamic int8 scales each Linear's input by its range, and the padded tokens widen that range: the two paths
    # agree to quantization noise, not to float rounding
    assert torch.allclose(got, reference, atol=1e-3)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_a_batch_without_padding_takes_the_packed_path_and_answers_the_same(kind, tiny_bert_dir, tiny_distilbert_dir,
                                                                           tokenizer, monkeypatch):
    encoder = _encoder(tiny_bert_dir if kind == "bert" else tiny_distilbert_dir)
    pair = PAIRS[0]
    batches = [tokenizer(SENTENCES[:1], return_tensors="pt"),  # one text: the lane's most common batch
               tokenizer([SENTENCES[0]] * 3, return_tensors="pt"),  # rows of one length
               tokenizer([pair[0]] * 2, [pair[1]] * 2, return_tensors="pt")]  # sentence pairs: segments 0 and 1
    assert batches[2]["token_type_ids"].max() == 1
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        types = batch.get("token_type_ids") if kind == "bert" else None
        assert bool(mask.all())
        indexes = []
        real_attention = packed._attention
        monkeypatch.setattr(packed, "_attention", lambda q, k, v, index, *rest, **options: indexes.append(index)
                            or real_attention(q, k, v, index, *rest, **options))
        with torch.inference_mode():
            assert packed.usable(encoder, mask)
            got = packed.packed_forward(encoder, ids, mask, types)
            monkeypatch.undo()
            reference = encoder(input_ids=ids, attention_mask=mask,
                                **({"token_type_ids": types} if types is not None else {}))
        assert indexes and all(index is None for index in indexes), "an unpadded batch has nothing to gather"
        assert torch.allclose(got.last_hidden_state, reference.last_hidden_state, atol=1e-5)
        if kind == "bert":
            assert torch.allclose(got.pooler_output, reference.pooler_output, atol=1e-5)
    with torch.inference_mode():  # an empty batch is the encoder's own business
        assert not packed.usable(encoder, torch.ones(0, 5, dtype=torch.long))


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_first_only_computes_the_first_positions_last_layer_alone_and_answers_the_same(kind, tiny_bert_dir,
                                                                                      tiny_distilbert_dir, tokenizer,
                                                                                      monkeypatch):
    encoder = _encoder(tiny_bert_dir if kind == "bert" else tiny_distilbert_dir)
    holes = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    holes["attention_mask"][0, 2] = 0  # a masked token inside a row: its first token's packed place still counts it
    batches = [tokenizer(SENTENCES, padding=True, return_tensors="pt"),  # padded rows
               tokenizer(SENTENCES[:1], return_tensors="pt"),  # one text, nothing to gather
               tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt"),  # pairs
               holes]
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        types = batch.get("token_type_ids") if kind == "bert" else None
        queries = []  # per layer: the positions whose outputs it computed
        real_layer = packed._layer_forward

        def layer_forward(layer, hidden, index, rows, length, heads, key_mask, firsts=None):
            queries.append(len(hidden) if firsts is None else len(firsts))
            return real_layer(layer, hidden, index, rows, length, heads, key_mask, firsts)

        monkeypatch.setattr(packed, "_layer_forward", layer_forward)
        with torch.inference_mode():
            got = packed.packed_forward(encoder, ids, mask, types, first_only=True)
            monkeypatch.undo()
            reference = encoder(input_ids=ids, attention_mask=mask,
                                **({"token_type_ids": types} if types is not None else {}))
        rows = ids.shape[0]
        assert queries[-1] == rows and all(count == int(mask.sum()) for count in queries[:-1])
        assert got.last_hidden_state.shape == (rows, 1, encoder.config.hidden_size)
        assert torch.allclose(got.last_hidden_state[:, 0], reference.last_hidden_state[:, 0], atol=1e-5)
        if kind == "bert":
            assert torch.allclose(got.pooler_output, reference.pooler_output, atol=1e-5)


def test_an_int8_model_reading_cls_alone_answers_within_quantization_noise_of_every_position(tiny_bert_dir,
                                                                                              tokenizer):
    torch.manual_seed(0)
    model = build_model("bert", SINGLE, tiny_bert_dir).eval()
    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        first = packed.packed_forward(model.encoder, batch["input_ids"], batch["attention_mask"], first_only=True)
        every = packed.packed_forward(model.encoder, batch["input_ids"], batch["attention_mask"])
    # the last layer's int8 inputs are scaled by the range of the [CLS] rows alone instead of every token's
    assert torch.allclose(first.pooler_output, every.pooler_output, atol=5e-3)


def test_first_only_on_left_padded_rows_computes_every_position(tiny_bert_dir, tokenizer):
    # a left-padded row's position 0 is a pad, not [CLS]: the whole layer runs and position 0 reads as it always did
    encoder = _encoder(tiny_bert_dir)
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    assert not bool(batch["attention_mask"][:, 0].all())
    with torch.inference_mode():
        got = packed.packed_forward(encoder, batch["input_ids"], batch["attention_mask"], first_only=True)
        full = packed.packed_forward(encoder, batch["input_ids"], batch["attention_mask"])
    assert got.last_hidden_state.shape == full.last_hidden_state.shape
    assert torch.equal(got.last_hidden_state, full.last_hidden_state)


def test_training_and_gradients_use_the_encoders_own_forward(tiny_bert_dir, tokenizer):
    encoder = _encoder(tiny_bert_dir)
    padded = tokenizer(SENTENCES, padding=True, return_tensors="pt")["attention_mask"]
    with torch.inference_mode():
        assert packed.usable(encoder, padded)
    assert not packed.usable(encoder, padded)  # gradients wanted (training, or a caller that needs them)
    encoder.train()
    with torch.no_grad():
        assert not packed.usable(encoder, padded)  # dropout: only the encoder's own forward does it


def test_architectures_it_cannot_run_exactly_are_left_to_the_encoder(tiny_bert_dir):
    encoder = _encoder(tiny_bert_dir)
    encoder.config.position_embedding_type = "relative_key"
    assert not packed.supports(encoder)
    encoder.config.position_embedding_type = "absolute"
    encoder.config.is_decoder = True
    assert not packed.supports(encoder)
    assert not packed.supports(torch.nn.Linear(2, 2))


def test_every_family_is_covered():
    assert {family for family, _ in VARIANTS} == set(FAMILIES)


SHAPES = {  # task type -> (tasks, which logits are compared: "tokens" at real positions, or "rows")
    "token-classification": ({"ner": ["O", "B-person", "I-person"]}, "tokens"),
    "question-answering": ({"answer": ["start", "end"]}, "tokens"),
    "multiple-choice": ({"choice": ["0", "1", "2"]}, "rows"),
}


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("task_type", list(SHAPES))
def test_every_task_type_predicts_the_same_with_and_without_packing(task_type, family, tiny_bert_dir,
                                                                    tiny_distilbert_dir, tokenizer, monkeypatch):
    tasks, compared = SHAPES[task_type]
    torch.manual_seed(0)
    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    model = build_model(family, tasks, encoder, task_type=task_type).eval()
    batch = tokenizer([a for a, _ in PAIRS] * 3, [b for _, b in PAIRS] * 3, padding=True, return_tensors="pt")
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    if task_type == "multiple-choice":  # (B=2, C=3, T): each question's three choices
        ids, mask, types = (x.view(3, 2, -1).transpose(0, 1).contiguous() for x in (ids, mask, types))
    with torch.inference_mode():
        got = model(ids, mask, token_type_ids=types).logits
        monkeypatch.setattr(packed, "usable", lambda *a: False)
        reference = model(ids, mask, token_type_ids=types).logits
    if compared == "tokens":
        real = mask.bool()
        got, reference = got[real], reference[real]  # padded positions are nobody's answer or tag
    assert torch.allclose(got, reference, atol=1e-5)
