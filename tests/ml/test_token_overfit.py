"""The token pieces fit together: a tiny token model overfits 16 sentences and tags them back, from words and from
raw text (windows, first-sub-token labels, heads, gathering, aggregation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.task_types.tagging import decode_entities, entity_metrics
from ml.token_data import gather, text_entities, text_windows, word_tags, word_windows
from models.encoders import load_encoder
from models.token_classification import FAMILIES

NAMES = ["Alice", "Bob", "Carol", "Dave"]
PLACES = ["Paris", "Berlin", "Lagos", "Lima"]
TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]


def _sentences():
    out = []
    for i in range(16):
        name, place = NAMES[i % 4], PLACES[(i // 4) % 4]
        if i % 2:
            words = [name, "Smith", "flew", "to", place, "today"]
            tags = ["B-person", "I-person", "O", "O", "B-location", "O"]
        else:
            words = ["yesterday", place, "welcomed", name]
            tags = ["O", "B-location", "O", "B-person"]
        out.append((words, tags))
    return out


def _batch(windows, pad_id):
    width = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), width), pad_id)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    labels = torch.full((len(windows), width), -100)
    for row, w in enumerate(windows):
        ids[row, :len(w.input_ids)] = torch.tensor(w.input_ids)
        mask[row, :len(w.input_ids)] = 1
        if w.labels is not None:
            labels[row, :len(w.labels)] = torch.tensor(w.labels)
    return ids, mask, labels


def _probs(model, windows, pad_id):
    ids, mask, _ = _batch(windows, pad_id)
    with torch.no_grad():
        logits = model(ids, mask).logits  # (W, T, C)
    probs = torch.softmax(logits, dim=-1).numpy()
    return [probs[i, :len(w.input_ids)] for i, w in enumerate(windows)]


@pytest.mark.parametrize("family", ["bert", "bert_lstm"])
def test_tiny_token_model_overfits_and_tags_back(family, tiny_bert_dir, tokenizer):
    sentences = _sentences()
    words, tags = [s[0] for s in sentences], [s[1] for s in sentences]
    label2id = {t: i for i, t in enumerate(TAGS)}
    # max_length 6 forces windows (sentences are 6-9 sub-tokens): training and reading back cross window borders
    windows, word_ids = word_windows(tokenizer, words, max_length=6, stride=2, tags=tags, label2id=label2id)
    assert len(windows) > len(sentences)
    torch.manual_seed(0)
    encoder = load_encoder(tiny_bert_dir)
    model = FAMILIES[family](encoder.config, {"ner": TAGS}, encoder=encoder, dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids, mask, labels = _batch(windows, tokenizer.pad_token_id)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        model(ids, mask, labels=labels).loss.backward()
        optimizer.step()
    model.eval()

    token_probs = gather(windows, _probs(model, windows, tokenizer.pad_token_id), [len(w) for w in word_ids])
    predicted = [word_tags(p, w, len(s), TAGS)[0] for p, w, s in zip(token_probs, word_ids, words)]
    assert entity_metrics(tags, predicted)["f1"] == 1.0

    texts = [" ".join(s) for s in words]
    text_wins, sources = text_windows(tokenizer, texts, max_length=6, stride=2)
    text_probs = gather(text_wins, _probs(model, text_wins, tokenizer.pad_token_id),
                        [len(s["tokens"]) for s in sources])
    for text, source, probs, sentence_words, sentence_tags in zip(texts, sources, text_probs, words, tags):
        entities = text_entities(text, source, probs, TAGS, "first")
        expected = [(e.type, " ".join(sentence_words[e.start:e.end])) for e in decode_entities(sentence_tags)]
        assert [(e["entity_group"], e["word"]) for e in entities] == expected
        assert all(e["word"] == text[e["start"]:e["end"]] and 0 < e["score"] <= 1 for e in entities)
        assert np.isfinite([e["score"] for e in entities]).all()
