"""The token backend in the batching engine: concurrent requests (short texts, windowed long texts, pre-tokenized
sentences) share batches and each gets exactly the result it gets alone."""
from __future__ import annotations

import threading

import pytest
import torch

from ml.batching import BatchingEngine, EngineOptions
from ml.token_serving import TokenPredictor
from models.encoders import load_encoder
from models.token_classification import FAMILIES

TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]


@pytest.fixture(scope="module")
def backend(tiny_bert_dir, tokenizer):
    torch.manual_seed(1)
    encoder = load_encoder(tiny_bert_dir)
    model = FAMILIES["bert"](encoder.config, {"ner": TAGS}, encoder=encoder)
    model.head.classifier.weight.data.normal_(0, 2.0)  # varied decisions, so results differ per text
    return TokenPredictor(model, tokenizer, TAGS, max_length=16, stride=4)


def test_requests_share_batches_without_mixing_results(backend):
    texts = [
        ["Alice met Bob in Paris", "short"],
        [" ".join(f"word{i} Lagos" for i in range(40))],  # many windows
        ["Carol", "Dave flew to Lima and then on to Berlin with Erin"],
    ]
    sentences = [["Zürich", "is", "calm"], ["New", "York", "City"] * 10]
    alone = [backend.results(_grouped(backend, request), backend.encode(request)) for request in texts]
    alone_words = backend.results(_grouped(backend, sentences), backend.encode(sentences))

    batch_sizes = []
    forward = backend.forward

    class Counting:  # the backend, recording how many rows each batch ran
        encode, results = backend.encode, backend.results

        @staticmethod
        def forward(rows):
            batch_sizes.append(len(rows))
            return forward(rows)

    engine = BatchingEngine.with_options(Counting(), EngineOptions(wait_ms=20.0, max_batch_tokens=256,
                                                                   max_batch_size=8))
    answers: dict[int, list] = {}
    threads = [threading.Thread(target=lambda k=k, r=r: answers.__setitem__(k, engine.predict(r)))
               for k, r in enumerate(texts + [sentences])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for k in range(len(texts)):
        _same(answers[k], alone[k])
    _same(answers[len(texts)], alone_words)
    assert all(len(r["tags"]) == len(s) for r, s in zip(answers[len(texts)], sentences))  # every word tagged
    assert sum(len(r["entities"]) for k in range(len(texts)) for r in answers[k]) > 0  # not vacuous
    rows = sum(len(backend.encode(r).rows) for r in texts + [sentences])
    assert sum(batch_sizes) == rows and len(batch_sizes) < rows  # windows of several inputs ran together


def _grouped(backend, inputs):
    """Each input's window outputs, every window run in a batch of its own."""
    encoded = backend.encode(inputs)
    outputs = [backend.forward([row])[0] for row in encoded.rows]
    grouped, start = [], 0
    for count in encoded.counts:
        grouped.append(outputs[start:start + count])
        start += count
    return grouped


def _same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        if "entities" in b:
            assert [(e["entity_group"], e["start"], e["end"]) for e in a["entities"]] == \
                   [(e["entity_group"], e["start"], e["end"]) for e in b["entities"]]
            assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-5)
        else:
            assert a["tags"] == b["tags"] and a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_mixed_input_kinds_and_unknown_strategy_are_refused(backend):
    with pytest.raises(ValueError, match="raw texts, or pre-tokenized"):
        backend.encode(["a text", ["a", "sentence"]])
    encoded = backend.encode(["Alice"])
    with pytest.raises(ValueError, match="aggregation_strategy"):
        backend.results(_grouped(backend, ["Alice"]), encoded, aggregation_strategy="longest")
