"""Token classification end to end in eager mode (issue 17): a CoNLL upload trains an entity recogniser through the
API, which then tags raw texts (entities with character offsets) and pre-tokenized sentences, and is evaluated."""
from __future__ import annotations

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

from .api_steps import ApiSteps, name_place_conll


def test_train_classify_and_evaluate_a_token_model(client, tiny_encoders):
    steps = ApiSteps(client)
    dataset_id = steps.upload(name_place_conll(), "ner.conll")
    job = steps.run_job("train", {
        "dataset_id": dataset_id, "task_type": "token-classification", "encoder": str(tiny_encoders["bert"]),
        "epochs": 40, "batch_size": 8, "max_length": 16, "stride": 4, "learning_rate": 3e-3,
        "validation_split": 0.0, "dropout": 0.0, "seed": 1}, task_type="token-classification")
    model = steps.model(job["model_id"])
    assert model["task_type"] == "token-classification"
    assert set(model["labels"]) == {"O", "B-person", "I-person", "B-location"}

    text = "Carol Smith flew to Lima"
    answer = client.post("/api/v1/predict", json={"model_id": model["id"], "texts": [text]})
    assert answer.status_code == 200, answer.get_json()
    entities = answer.get_json()["predictions"][0]["entities"]
    assert [(e["entity_group"], e["word"]) for e in entities] == [("person", "Carol Smith"), ("location", "Lima")]
    assert all(e["word"] == text[e["start"]:e["end"]] for e in entities)

    tagged = client.post("/api/v1/predict", json={"model_id": model["id"], "tokens": [text.split()]})
    assert tagged.status_code == 200, tagged.get_json()
    assert tagged.get_json()["predictions"][0]["tags"] == ["B-person", "I-person", "O", "O", "B-location"]

    evaluated = steps.run_job("evaluate", {"model_id": model["id"], "dataset_id": dataset_id})
    assert evaluated["metrics"]["f1"] == 1.0 and evaluated["metrics"]["examples"] == 16
