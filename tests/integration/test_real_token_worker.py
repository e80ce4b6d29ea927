"""Token classification against a real Celery worker process, the real Redis server and PostgreSQL (the
tests/integration/test_real_worker.py stack, issue 17): a 16-sentence CoNLL upload trains a tiny entity recogniser
through the API on the worker, which then tags raw texts in a classify job whose stored predictions (entities with
character offsets, the entity types a ``?label=`` filter matches through PostgreSQL's jsonb) are checked, and
evaluates it."""
from __future__ import annotations

import pytest

from .api_steps import name_place_conll
from .real_stack import real_run_fixture, stored_predictions

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REDIS_DB = 9  # a database of its own on the shared server (the other real tests use 10 to 14), flushed by _Stack
run = real_run_fixture(REDIS_DB)


def test_token_model_trains_tags_and_evaluates_on_a_real_worker(run, tiny_encoders):
    dataset_id = run.upload(name_place_conll(), "ner.conll", "conll", 16)

    job = run.run_job("train", {
        "dataset_id": dataset_id, "task_type": "token-classification", "encoder": str(tiny_encoders["bert"]),
        "epochs": 40, "batch_size": 8, "max_length": 16, "stride": 4, "learning_rate": 3e-3,
        "validation_split": 0.0, "dropout": 0.0, "seed": 1}, timeout=300, task_type="token-classification")
    model = run.model(job["model_id"])
    assert model["task_type"] == "token-classification"
    assert set(model["labels"]) == {"O", "B-person", "I-person", "B-location"}

    texts = ["Carol Smith flew to Lima", "Dave Smith flew to Paris"]
    classify = run.run_job("classify", {"model_id": model["id"], "texts": texts}, task_type="token-classification")

    # what the worker stored, read from PostgreSQL: the entities (offsets into each text) and the types found
    stored = stored_predictions(classify["id"], "index", "text", "result", "labels", "label")
    assert [(i, text) for i, text, *_ in stored] == list(enumerate(texts))
    for (_, text, result, labels, label), (name, place) in zip(stored, [("Carol Smith", "Lima"),
                                                                         ("Dave Smith", "Paris")], strict=True):
        entities = result["entities"]
        assert [(e["entity_group"], e["word"]) for e in entities] == [("person", name), ("location", place)]
        assert all(text[e["start"]:e["end"]] == e["word"] and 0 < e["score"] <= 1 for e in entities)
        assert labels == ["location", "person"] and label == "location"

    # the API serves the same rows, and ?label= filters them by entity type (jsonb containment)
    items = run.predictions(classify["id"])
    assert [i["entities"] for i in items] == [r[2]["entities"] for r in stored]
    persons = run.predictions(classify["id"], "?label=person")
    assert [i["index"] for i in persons] == [0, 1]

    evaluated = run.run_job("evaluate", {"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluated["metrics"]["f1"] == 1.0 and evaluated["metrics"]["examples"] == 16
    assert set(evaluated["metrics"]["per_type"]) == {"person", "location"}
