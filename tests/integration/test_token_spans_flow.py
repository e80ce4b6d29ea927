"""Span data end to end in eager mode (issue 17): a JSON Lines upload of texts with character spans trains an entity
recogniser through the API (one span deliberately misaligned, one over spaces only: the job's metrics report them
snapped and dropped), which tags raw texts, classifies the dataset's text column and is evaluated on span data,
the JSONL and a Label Studio export alike; a Label Studio export trains too."""
from __future__ import annotations

import io
import json

import pytest

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

from .conftest import wait_for_job

NAMES, PLACES = ["Alice", "Bob", "Carol", "Dave"], ["Paris", "Berlin", "Lagos", "Lima"]


def _examples() -> list[tuple[str, list[tuple[int, int, str]]]]:
    """16 texts "<name> Smith flew to <place>", spans over the person and the place. The first person span stops
    inside "Smith" (snapped to it); the second text has two spaces before the place and a span over them (dropped)."""
    out = []
    for i in range(16):
        name, place = NAMES[i % 4], PLACES[(i // 4) % 4]
        gap = "  " if i == 1 else " "
        text = f"{name} Smith flew to{gap}{place}"
        person_end = len(name) + (4 if i == 0 else 6)  # i == 0: "<name> Smit"
        at = text.index(place)
        spans = [(0, person_end, "person"), (at, at + len(place), "location")]
        if i == 1:
            spans.append((at - 2, at, "location"))  # only the two spaces
        out.append((text, spans))
    return out


def _jsonl(examples) -> bytes:
    return "\n".join(json.dumps({"text": text, "entities": [{"start": s, "end": e, "label": kind}
                                                            for s, e, kind in spans]})
                     for text, spans in examples).encode()


def _label_studio(examples) -> bytes:
    """Label Studio's JSON export: tasks with ``data.text`` and ``annotations[].result[].value``."""
    tasks = [{"id": i + 1, "data": {"text": text},
              "annotations": [{"id": i + 1, "result": [
                  {"from_name": "label", "to_name": "text", "type": "labels",
                   "value": {"start": s, "end": e, "text": text[s:e], "labels": [kind]}} for s, e, kind in spans]}]}
             for i, (text, spans) in enumerate(examples)]
    return json.dumps(tasks).encode()


def _upload(client, data: bytes, filename: str) -> int:
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), filename)},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _train(client, encoder, dataset_id: int, text_column: str, spans_column: str, epochs: int) -> dict:
    body = {"dataset_id": dataset_id, "task_type": "token-classification", "text_column": text_column,
            "spans_column": spans_column, "encoder": str(encoder), "epochs": epochs, "batch_size": 8,
            "max_length": 16, "stride": 4, "learning_rate": 3e-3, "validation_split": 0.0, "dropout": 0.0,
            "seed": 1}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job.get("error")
    return job


def _evaluate(client, model_id: int, dataset_id: int, **columns) -> dict:
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id, **columns})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job.get("error")
    return job["metrics"]


def test_train_classify_and_evaluate_on_span_data(client, tiny_encoders):
    examples = _examples()
    dataset_id = _upload(client, _jsonl(examples), "spans.jsonl")
    job = _train(client, tiny_encoders["bert"], dataset_id, "text", "entities", epochs=40)
    assert job["metrics"]["data_report"] == {"spans": 33, "snapped": 1, "dropped": 1}
    model = client.get(f"/api/v1/models/{job['model_id']}").get_json()
    assert model["task_type"] == "token-classification"
    assert model["labels"] == ["O", "B-location", "I-location", "B-person", "I-person"]

    text = "Carol Smith flew to Lima"
    answer = client.post("/api/v1/predict", json={"model_id": model["id"], "texts": [text]})
    assert answer.status_code == 200, answer.get_json()
    entities = answer.get_json()["predictions"][0]["entities"]
    assert [(e["entity_group"], e["word"]) for e in entities] == [("person", "Carol Smith"), ("location", "Lima")]

    # classifying the dataset reads its text column (as the model was trained): raw texts in, entities out
    response = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "dataset_id": dataset_id})
    assert response.status_code == 202, response.get_json()
    classify = wait_for_job(client, response.get_json()["id"])
    assert classify["status"] == "succeeded", classify.get("error")
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions?limit=2").get_json()["items"]
    assert items[1]["text"] == examples[1][0]
    assert [e["entity_group"] for e in items[1]["entities"]] == ["person", "location"]

    # evaluated on the span data: the snapped span counts as its words; the dropped one, which no tag can carry, is a
    # false negative (the model finds the other 32 of 33), and the report says so
    evaluated = {"spans": 33, "snapped": 1, "dropped": 1, "dropped_types": {"location": 1},
                 "dropped_scored_as": "false negatives"}
    metrics = _evaluate(client, model["id"], dataset_id)
    assert metrics["examples"] == 16 and metrics["support"] == 33 and metrics["precision"] == 1.0
    assert metrics["recall"] == 32 / 33 and metrics["f1"] == pytest.approx(64 / 65)
    assert metrics["data_report"] == evaluated

    # the same data as a Label Studio export: its columns are data and annotations
    studio_id = _upload(client, _label_studio(examples), "export.json")
    metrics = _evaluate(client, model["id"], studio_id, text_column="data", label_column="annotations")
    assert metrics["f1"] == pytest.approx(64 / 65) and metrics["data_report"] == evaluated

    # entity types the model does not know are refused before any job exists
    other = _upload(client, _jsonl([("Lima is far", [(0, 4, "city")])]), "other.jsonl")
    refused = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": other})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "unknown_labels"


def test_a_label_studio_export_trains_and_its_texts_are_classified(client, tiny_encoders):
    examples = _examples()
    dataset_id = _upload(client, _label_studio(examples), "export.json")
    job = _train(client, tiny_encoders["bert"], dataset_id, "data", "annotations", epochs=1)
    assert job["metrics"]["data_report"] == {"spans": 33, "snapped": 1, "dropped": 1}
    assert job["metrics"]["sentences"] == {"train": 16, "validation": 0}

    response = client.post("/api/v1/jobs/classify", json={"model_id": job["model_id"], "dataset_id": dataset_id})
    assert response.status_code == 202, response.get_json()
    classify = wait_for_job(client, response.get_json()["id"])
    assert classify["status"] == "succeeded", classify.get("error")
    first = client.get(f"/api/v1/jobs/{classify['id']}/predictions?limit=1").get_json()["items"][0]
    assert first["text"] == examples[0][0]  # the text of the data object, not its JSON
    assert all(first["text"][e["start"]:e["end"]] == e["word"] for e in first["entities"])
