"""Multi-label and sentence-pair models served end to end in eager mode: train through the API, classify (texts,
pairs, or a dataset's two columns), read predictions and exports, evaluate; plus a training's live curves and ETA
stored by the runner's lease."""
from __future__ import annotations

import csv
import io
import json
from sqlalchemy import update

from core import jobs
from core.db import db
from core.schema import Job, JobType
from core.specs import TrainRequest
from tests.factories import make_user
from tests.web.factories import make_dataset

from .conftest import sample_csv, upload, wait_for_job

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from worker.lease import Lease

WORDS = {"sport": "match goal team", "tech": "laptop code chip", "news": "today report city"}


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _train(client, encoder, **body) -> dict:
    body = {"family": "bert", "encoder": str(encoder), "epochs": 2, "batch_size": 8, "max_length": 24,
            "validation_split": 0.25, "seed": 3, "learning_rate": 1e-3, **body}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_multi_label_model_predictions_export_and_evaluation(client, tiny_encoders):
    combos = [["sport"], ["tech"], ["news"], ["sport", "news"], ["tech", "news"], []]
    rows = [{"text": " ".join(WORDS[t] for t in tags) + f" {i}" if tags else f"nothing {i}", "tags": "|".join(tags)}
            for i, tags in enumerate(combos * 5)]
    dataset_id = upload(client, _csv(rows))
    job = _train(client, tiny_encoders["bert"], dataset_id=dataset_id, text_column="text", label_column="tags",
                 multi_label=True)
    history = job["metrics"]["history"]
    assert history and {"step", "epoch", "train_loss", "val_loss", "accuracy", "macro_f1"} <= set(history[-1])

    response = client.post("/api/v1/jobs/classify", json={"model_id": job["model_id"], "texts": [r["text"] for r in rows[:6]]})
    classify = wait_for_job(client, response.get_json()["id"])
    assert classify["status"] == "succeeded", classify["error"]
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions").get_json()["items"]
    for item in items:
        assert set(item) == {"index", "text", "labels", "scores"}
        assert set(item["scores"]) == {"news", "sport", "tech"} and set(item["labels"]) <= set(item["scores"])
    # label counts and the filter by label mean "texts given that label", not only the top-scoring one
    counts = classify["metrics"]["label_counts"]
    assert sum(counts.values()) == sum(len(item["labels"]) for item in items) > 0
    for label in ("news", "sport", "tech"):
        having = [item["index"] for item in items if label in item["labels"]]
        assert counts.get(label, 0) == len(having)
        page = client.get(f"/api/v1/jobs/{classify['id']}/predictions?label={label}").get_json()
        assert page["total"] == len(having) and [item["index"] for item in page["items"]] == having
    lines = client.get(f"/api/v1/jobs/{classify['id']}/export?format=csv").get_data(as_text=True).splitlines()
    assert lines[0].lstrip("\ufeff") == "index,text,labels,score_news,score_sport,score_tech"
    exported = list(csv.DictReader(io.StringIO("\n".join(lines).lstrip("\ufeff"))))
    assert [r["labels"].split("|") if r["labels"] else [] for r in exported] == [i["labels"] for i in items]
    jsonl = [json.loads(line) for line in client.get(
        f"/api/v1/jobs/{classify['id']}/export?format=jsonl").get_data(as_text=True).splitlines()]
    assert [r["labels"] for r in jsonl] == [i["labels"] for i in items]

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": job["model_id"], "dataset_id": dataset_id})
    assert evaluation.status_code == 202, evaluation.get_json()
    metrics = wait_for_job(client, evaluation.get_json()["id"])["metrics"]
    assert metrics["examples"] == len(rows)
    assert {"accuracy", "subset_accuracy", "micro_f1", "macro_f1", "per_class"} <= set(metrics)
    assert metrics["per_class"]["news"]["support"] == sum("news" in r["tags"] for r in rows)


def test_pair_model_classifies_pairs_and_dataset_columns(client, tiny_encoders):
    rows = [{"a": f"{WORDS[x]} {i}", "b": f"{WORDS[y]} {i}", "label": "same" if x == y else "different"}
            for i, (x, y) in enumerate([(x, y) for x in WORDS for y in WORDS] * 3)]
    dataset_id = upload(client, _csv(rows))
    job = _train(client, tiny_encoders["bert"], dataset_id=dataset_id, text_column="a", text_pair_column="b",
                 label_column="label")
    model_id = job["model_id"]
    pairs = [[r["a"], r["b"]] for r in rows[:4]]
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "pairs": pairs})
    assert response.status_code == 202, response.get_json()
    classify = wait_for_job(client, response.get_json()["id"])
    assert classify["status"] == "succeeded", classify["error"]
    items = client.get(f"/api/v1/jobs/{classify['id']}/predictions").get_json()["items"]
    assert [[i["text"], i["text_pair"]] for i in items] == pairs
    assert all(i["label"] in ("same", "different") for i in items)
    predict = client.post("/api/v1/predict", json={"model_id": model_id, "pairs": pairs})
    assert predict.status_code == 200, predict.get_json()
    assert [p["label"] for p in predict.get_json()["predictions"]] == [i["label"] for i in items]

    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "dataset_id": dataset_id,
                                                          "text_column": "a", "text_pair_column": "b"})
    by_dataset = wait_for_job(client, response.get_json()["id"])
    assert by_dataset["status"] == "succeeded", by_dataset["error"]
    first = client.get(f"/api/v1/jobs/{by_dataset['id']}/predictions?limit=4").get_json()["items"]
    assert [i["label"] for i in first] == [i["label"] for i in items]  # the same pairs, the same answers
    header = client.get(f"/api/v1/jobs/{by_dataset['id']}/export?format=csv").get_data(as_text=True).splitlines()[0]
    assert header.lstrip("\ufeff").startswith("index,text,text_pair,label,score")

    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id})
    metrics = wait_for_job(client, evaluation.get_json()["id"])["metrics"]
    assert metrics["examples"] == len(rows) == sum(map(sum, metrics["confusion_matrix"]["matrix"]))


def test_the_lease_stores_eta_and_history_only_when_it_grew(client):
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.TRAIN, {}).id
    with db.session() as session:
        owner = "test-host#1:1"
        assert jobs.claim(session, job_id, owner, lease_seconds=60, max_attempts=3).outcome.value == "claimed"
    lease = Lease(job_id, 60)
    lease.owner = owner
    history = [{"step": 5, "epoch": 1, "train_loss": 0.9, "val_loss": float("nan"), "accuracy": 0.5, "macro_f1": 0.4}]
    lease.progress(0.25, {"eta_seconds": 30, "history": history})
    history.append({"step": 10})  # the loop's own list grows: what was reported must not change with it
    lease.beat()
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["progress"] == 0.25 and 28 <= job["eta_seconds"] <= 30
    assert job["metrics"] == {"history": [{**history[0], "val_loss": None}]}  # NaN is no JSON for PostgreSQL
    with db.session() as session:  # stands for a newer write: an unchanged history must not overwrite it
        session.execute(update(Job).where(Job.id == job_id).values(metrics={"history": []}))
    lease.progress(0.5, {"eta_seconds": 10, "history": history[:1]})
    lease.beat()
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["metrics"] == {"history": []} and job["progress"] == 0.5 and job["eta_seconds"] <= 10
    lease.progress(0.75, {"history": history})
    lease.beat()
    assert len(client.get(f"/api/v1/jobs/{job_id}").get_json()["metrics"]["history"]) == 2
    lease.progress(0.8, {"eta_seconds": float("inf")})  # ignored: the last estimate stands
    lease.beat()
    with db.session() as session:
        assert session.get(Job, job_id).eta_at is not None


def test_a_validation_dataset_replaces_the_random_split(client, tiny_encoders):
    rows = list(csv.DictReader(io.StringIO(sample_csv(60).decode())))
    train_id, validation_id = upload(client, _csv(rows[:40]), "train"), upload(client, _csv(rows[40:]), "val")
    job = _train(client, tiny_encoders["bert"], dataset_id=train_id, validation_dataset_id=validation_id,
                 text_column="text", label_column="sentiment", epochs=1)
    metrics = job["metrics"]
    assert (metrics["train_examples"], metrics["validation_examples"]) == (40, 20)
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 20


def test_the_worker_reads_only_a_validation_dataset_its_owner_may_read(client, settings):
    alice, bob = make_user("alice"), make_user("bob")
    mine, theirs = make_dataset(sample_csv(20), owner_id=alice.id), make_dataset(sample_csv(20), owner_id=bob.id)
    request = TrainRequest(dataset_id=mine, validation_dataset_id=theirs, text_column="text", label_column="sentiment")
    with db.session() as session:  # as if the web had let it through: the worker checks again
        job_id = jobs.create_job(session, JobType.TRAIN, request.model_dump(mode="json"), dataset_id=mine,
                                 owner_id=alice.id).id
    worker.tasks.train.apply(args=[job_id])
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["status"] == "failed" and f"validation dataset {theirs} no longer exists" in job["error"]
