"""A 100,000-token sentence sent to a token model (issue 17), eagerly through the API: it is split into windows and
every word gets one tag, rather than crashing or being cut at ``max_length``; so does a raw text at the
deployment's character limit. The model is a tiny random one saved to disk (no training)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from core.db import db
from core.schema import Prediction, TrainedModel

TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]
WORDS = ["Alice", "flew", "to", "Paris", "with", "Bob"]


@pytest.fixture
def token_model_id(tiny_bert_dir, tokenizer, tmp_path) -> int:
    """A random token model (bert, max_length 64, stride 16) saved under tmp_path, and its row."""
    import torch

    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = build_model("bert", {"tags": TAGS}, tiny_bert_dir, task_type="token-classification")
    model.max_length, model.stride = 64, 16
    directory = save_model(model, tokenizer, tmp_path / "ner")
    with db.session() as session:
        row = TrainedModel(name="ner", version=1, family="bert", encoder="tiny", labels=TAGS, tasks={"tags": TAGS},
                           metrics={}, artifact_dir=str(directory),
                           params={"family": "bert", "task_type": "token-classification", "tokens_column": "tokens",
                                   "tags_column": "tags", "max_length": 64, "stride": 16})
        session.add(row)
        session.flush()
        return row.id


def test_a_100000_token_sentence_is_tagged_in_windows(client, token_model_id):
    sentence = [WORDS[i % len(WORDS)] for i in range(100_000)]
    response = client.post("/api/v1/predict", json={"model_id": token_model_id, "tokens": [sentence, ["Bob"]],
                                                    "timeout_s": 120})
    assert response.status_code == 200, response.get_json()
    long, short = response.get_json()["predictions"]
    assert long["tokens"] == sentence and len(long["tags"]) == len(long["scores"]) == 100_000
    assert set(long["tags"]) <= set(TAGS) and all(0 < s <= 1 for s in long["scores"])
    assert len(set(long["tags"])) > 1  # the random head tags words differently: every window was scored
    assert short["tokens"] == ["Bob"] and short["tags"][0] in TAGS
    with db.session() as session:
        stored = session.scalars(select(Prediction).where(Prediction.index == 0)).one()
        assert len(stored.result["tags"]) == 100_000


def test_a_raw_text_at_the_character_limit_is_tagged_in_windows(client, token_model_id, settings):
    words = []
    while len(" ".join(words)) < settings.max_text_chars - 10:
        words.append(WORDS[len(words) % len(WORDS)])
    text = " ".join(words)
    response = client.post("/api/v1/predict", json={"model_id": token_model_id, "texts": [text], "timeout_s": 120})
    assert response.status_code == 200, response.get_json()
    entities = response.get_json()["predictions"][0]["entities"]
    assert entities and entities[-1]["end"] > len(text) // 2  # found past the first window
    assert all(0 <= e["start"] < e["end"] <= len(text) and text[e["start"]:e["end"]] == e["word"]
               for e in entities)
    assert all(e["entity_group"] in {"person", "location"} for e in entities)
