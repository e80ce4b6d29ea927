"""POST /api/v1/jobs/evaluate (validation, ownership, unknown labels), classify with sentence pairs, the job JSON's
``eta_seconds``, and the job page's charts, confusion matrix and per-class table. No worker: see
tests/integration/test_evaluation.py for the jobs running."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from core.db import db
from core.schema import Job, TrainedModel, utcnow
from tests.factories import api_client, make_user

from . import factories as f
from .helpers import assert_error

SVG = "{http://www.w3.org/2000/svg}"
TRAINED = {"family": "bert", "text_column": "text", "label_column": "label", "label_columns": ["label"]}


def _model(params: dict | None = None, **kwargs) -> int:
    model_id = f.make_model(**kwargs)
    with db.session() as session:
        session.execute(update(TrainedModel).where(TrainedModel.id == model_id).values(params=params or TRAINED))
    return model_id


def _jobs() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_evaluate_queues_a_job_on_the_classify_workers(client, sent):
    dataset_id, model_id = f.make_dataset(), _model()
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id})
    assert response.status_code == 202, response.json
    job = response.json
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{job['id']}")
    assert (job["type"], job["status"], job["model_id"], job["dataset_id"]) == ("evaluate", "queued", model_id,
                                                                                 dataset_id)
    # columns left out are the model's own, resolved once and stored for the worker
    assert job["params"]["text_column"] == "text" and job["params"]["label_columns"] == ["label"]
    assert job["params"]["tasks"] == {"label": ["neg", "pos"]} and job["params"]["text_count"] == 4
    assert sent == [(job["id"], "evaluate")]
    assert client.get("/api/v1/jobs?type=evaluate").json["total"] == 1


def test_labels_the_model_does_not_know_are_a_422_listing_them(client, sent):
    dataset_id = f.make_dataset(b"text,label\nfine,pos\nmeh,neutral\nbad,neg\nugh,angry\n")
    response = client.post("/api/v1/jobs/evaluate", json={
        "model_id": _model(), "dataset_id": dataset_id, "text_column": "text", "label_column": "label"})
    error = assert_error(response, 422, "unknown_labels")
    assert error["labels"] == ["angry", "neutral"] and "'neutral'" in error["message"]
    assert _jobs() == 0 and sent == []


@pytest.mark.parametrize(("body", "code"), [
    ({"label_column": "nope"}, "unknown_column"),
    ({"text_column": "missing"}, "unknown_column"),
    ({"label_columns": ["label", "topic"]}, "label_columns_mismatch"),
    ({"text_pair_column": "topic"}, "text_pair_mismatch"),
])
def test_columns_that_do_not_fit_the_dataset_or_model_are_422(client, body, code):
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": _model(), "dataset_id": f.make_dataset(),
                                                          **body})
    assert_error(response, 422, code)
    assert _jobs() == 0


@pytest.mark.parametrize("body", [
    {"model_id": 1, "dataset_id": 1, "label_column": "a", "label_columns": ["a"]},
    {"model_id": 1, "dataset_id": 1, "text_column": "a", "label_column": "a"},
    {"model_id": 1, "dataset_id": 1, "bogus": 1},
    {"model_id": 1},
    {"model_id": 2**63, "dataset_id": 1},
    {"model_id": 1, "dataset_id": 1, "text_column": "a\x00"},
])
def test_malformed_bodies_are_422(client, body):
    assert_error(client.post("/api/v1/jobs/evaluate", json=body), 422)


def test_multitask_model_is_evaluated_on_its_tasks(client):
    tasks = {"label": ["neg", "pos"], "topic": ["film", "music"]}
    model_id = _model({"family": "multitask", "text_column": "text", "label_columns": ["label", "topic"]},
                      family="multitask", tasks=tasks)
    dataset_id = f.make_dataset()
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={
        "model_id": model_id, "dataset_id": dataset_id, "label_columns": ["label"]}), 422, "label_columns_mismatch")
    assert "'topic'" in error["message"]
    ok = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id,
                                                    "label_columns": ["topic", "label"]})
    assert ok.status_code == 202 and ok.json["params"]["label_columns"] == ["label", "topic"]


def test_someone_elses_model_or_dataset_is_404(app, client):
    alice, bob = make_user("alice"), make_user("bob")
    as_bob = api_client(app, bob)
    alices_model, alices_dataset = _model(owner_id=alice.id), f.make_dataset(owner_id=alice.id)
    bobs_model, bobs_dataset = _model(owner_id=bob.id), f.make_dataset(owner_id=bob.id)
    for model_id, dataset_id in ((alices_model, bobs_dataset), (bobs_model, alices_dataset)):
        response = as_bob.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id})
        assert_error(response, 404, "not_found")
    assert as_bob.post("/api/v1/jobs/evaluate", json={"model_id": bobs_model, "dataset_id": bobs_dataset}
                       ).status_code == 202
    shared = f.make_dataset(shared=True)  # the bundled samples are readable by all
    assert as_bob.post("/api/v1/jobs/evaluate", json={"model_id": bobs_model, "dataset_id": shared}
                       ).status_code == 202


# ---------------------------------------------------------------- classify with sentence pairs


def test_pairs_go_to_pair_models_and_texts_to_the_others(client, sent):
    pair_model = _model({**TRAINED, "text_pair_column": "hypothesis"})
    text_model = _model()
    pairs = [["A man plays.", "Someone makes music."], ["It rains.", "The sun shines."]]
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": text_model, "pairs": pairs}), 422,
                 "pairs_not_supported")
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": pair_model, "texts": ["a"]}), 422,
                 "pairs_required")
    assert_error(client.post("/api/v1/predict", json={"model_id": pair_model, "texts": ["a"]}), 422,
                 "pairs_required")
    response = client.post("/api/v1/jobs/classify", json={"model_id": pair_model, "pairs": pairs})
    assert response.status_code == 202, response.json
    assert response.json["params"]["input_kind"] == "pairs" and response.json["params"]["text_count"] == 2
    with db.session() as session:
        assert session.get(Job, response.json["id"]).inputs == pairs
    dataset_id = f.make_dataset()
    # the pair column left out is the model's own, which this dataset lacks: named, with where it came from
    error = assert_error(client.post("/api/v1/jobs/classify", json={
        "model_id": pair_model, "dataset_id": dataset_id, "text_column": "text"}), 422, "unknown_column")
    assert "'hypothesis'" in error["message"] and "as the model was trained" in error["message"]
    assert_error(client.post("/api/v1/jobs/classify", json={
        "model_id": pair_model, "dataset_id": dataset_id, "text_column": "text", "text_pair_column": "nope"}),
        422, "unknown_column")
    assert client.post("/api/v1/jobs/classify", json={"model_id": pair_model, "dataset_id": dataset_id,
                                                      "text_column": "text", "text_pair_column": "topic"}
                       ).status_code == 202
    # a dataset with the model's pair column: it is read when left out, with or without a text column
    nli = f.make_dataset(b"text,hypothesis,premise\na,b,c\nd,e,f\n", name="nli")
    for body in ({"text_column": "premise"}, {}):
        response = client.post("/api/v1/jobs/classify", json={"model_id": pair_model, "dataset_id": nli, **body})
        assert response.status_code == 202, response.json
        assert response.json["params"]["text_pair_column"] == "hypothesis"
        assert response.json["params"].get("text_column") == body.get("text_column", TRAINED.get("text_column"))


@pytest.mark.parametrize("pairs", [[["only one"]], [["a", "b", "c"]], [["a", "  "]], [["a", 3]], [], "ab"])
def test_malformed_pairs_are_422(client, pairs):
    model_id = _model({**TRAINED, "text_pair_column": "hypothesis"})
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model_id, "pairs": pairs}), 422)
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model_id, "pairs": [["a", "b"]],
                                                            "texts": ["a"]}), 422)


def test_multi_label_and_pair_predictions_serialise_and_export(client):
    model_id = _model({**TRAINED, "multi_label": True, "text_pair_column": "b"}, tasks={"tags": ["x", "y", "z"]})
    job_id = f.make_classify_job(model_id, ["unused"])
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(params={
            "model_id": model_id, "input_kind": "pairs", "text_count": 2}))
    f.finished(job_id, [
        {"index": 0, "text": "a", "text_pair": "b", "label": "y", "score": 0.9, "labels": ["y", "x"],
         "scores": {"x": 0.6, "y": 0.9, "z": 0.1}},
        {"index": 1, "text": "c", "text_pair": "d", "label": "z", "score": 0.3, "labels": [],
         "scores": {"x": 0.1, "y": 0.2, "z": 0.3}},
    ])
    items = client.get(f"/api/v1/jobs/{job_id}/predictions").json["items"]
    assert items[0] == {"index": 0, "text": "a", "text_pair": "b", "labels": ["y", "x"],
                        "scores": {"x": 0.6, "y": 0.9, "z": 0.1}}
    assert items[1]["labels"] == [] and "label" not in items[1]
    csv = client.get(f"/api/v1/jobs/{job_id}/export?format=csv").get_data(as_text=True).lstrip("\ufeff")
    assert csv.splitlines() == ["index,text,text_pair,labels,score_x,score_y,score_z", "0,a,b,y|x,0.6,0.9,0.1",
                                "1,c,d,,0.1,0.2,0.3"]
    jsonl = client.get(f"/api/v1/jobs/{job_id}/export?format=jsonl").get_data(as_text=True).splitlines()
    assert '"labels": ["y", "x"]' in jsonl[0] and '"text_pair": "b"' in jsonl[0]
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Second text" in page and "no label" in page


# ---------------------------------------------------------------- eta_seconds


def test_eta_seconds_from_the_reported_estimate_else_from_progress(client):
    job_id = f.make_train_job(f.make_dataset())
    assert client.get(f"/api/v1/jobs/{job_id}").json["eta_seconds"] is None  # queued
    f.start(job_id)
    assert client.get(f"/api/v1/jobs/{job_id}").json["eta_seconds"] is None  # nothing known yet
    with db.session() as session:  # a quarter done after 60 s: about 180 s to go
        session.execute(update(Job).where(Job.id == job_id).values(started_at=utcnow() - timedelta(seconds=60),
                                                                   progress=0.25))
    assert 175 <= client.get(f"/api/v1/jobs/{job_id}").json["eta_seconds"] <= 185
    with db.session() as session:  # what the training reported wins
        session.execute(update(Job).where(Job.id == job_id).values(eta_at=utcnow() + timedelta(seconds=42)))
    assert 40 <= client.get(f"/api/v1/jobs/{job_id}").json["eta_seconds"] <= 42
    f.succeed(job_id)
    assert client.get(f"/api/v1/jobs/{job_id}").json["eta_seconds"] is None


# ---------------------------------------------------------------- job page


HISTORY = [{"step": s, "epoch": s / 10, "train_loss": 1 / s, "val_loss": 2 / s, "accuracy": 0.5 + s / 100,
            "macro_f1": 0.4 + s / 100} for s in (10, 20, 30)]
CONFUSION = {"labels": ["neg", "pos"], "matrix": [[3, 1], [0, 4]]}
PER_CLASS = {"neg": {"precision": 1.0, "recall": 0.75, "f1": 0.857143, "support": 4},
             "pos": {"precision": 0.8, "recall": 1.0, "f1": 0.888889, "support": 4}}


def _svgs(html: str) -> list[ET.Element]:
    svgs, start = [], html.find("<svg")
    while start != -1:
        end = html.index("</svg>", start) + len("</svg>")
        svgs.append(ET.fromstring(html[start:end]))
        start = html.find("<svg", end)
    return svgs


def test_evaluate_job_page_shows_the_heat_map_and_per_class_table(client):
    dataset_id, model_id = f.make_dataset(), _model()
    job_id = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id}).json["id"]
    assert "when the evaluation is done" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    f.start(job_id)
    f.succeed(job_id, metrics={"accuracy": 0.875, "macro_f1": 0.873016, "per_class": PER_CLASS,
                               "confusion_matrix": CONFUSION, "examples": 8})
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    (heatmap,) = _svgs(html)
    counts = [int(g.attrib["data-count"]) for g in heatmap.iter(f"{SVG}g") if "data-count" in g.attrib]
    assert counts == [3, 1, 0, 4]
    assert 'class="table compact per-class"' in html and "0.8571" in html and "Evaluation" in html


def test_training_page_draws_curves_and_refreshes_them_from_the_fragment(client):
    job_id = f.make_train_job(f.make_dataset())
    f.start(job_id)
    with db.session() as session:  # what the runner stores while training runs (core.jobs.heartbeat)
        session.execute(update(Job).where(Job.id == job_id).values(metrics={"history": HISTORY[:2]}))
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'data-evaluations="2"' in html and 'id="job-eta"' in html
    loss, scores = _svgs(html)
    assert {g.attrib["data-series"] for g in scores.iter(f"{SVG}g") if "data-series" in g.attrib} == {
        "accuracy", "macro_f1"}
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(metrics={"history": HISTORY}))
    fragment = client.get(f"/jobs/{job_id}/charts")
    assert fragment.status_code == 200 and "<html" not in fragment.get_data(as_text=True)
    loss, _ = _svgs(fragment.get_data(as_text=True))
    (train_loss,) = [g for g in loss.iter(f"{SVG}g") if g.attrib.get("data-series") == "train_loss"]
    assert len(list(train_loss.iter(f"{SVG}circle"))) == 3
    f.succeed(job_id, metrics={"history": HISTORY, "accuracy": 0.8, "confusion_matrix": CONFUSION,
                               "per_class": PER_CLASS, "best_step": 30})
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert len(_svgs(html)) == 3 and "best_step" in html and "validation set" in html


def test_someone_elses_job_charts_are_404(app, client):
    alice, bob = make_user("alice"), make_user("bob")
    job_id = f.make_train_job(f.make_dataset(owner_id=alice.id), owner_id=alice.id)
    assert api_client(app, bob).get(f"/jobs/{job_id}/charts").status_code == 404


def test_the_model_page_evaluates_on_a_chosen_dataset(client, sent):
    """The model page's form queues an evaluate job (columns default to the model's) and lists it; a dataset
    without the model's label column re-renders the form with the reason."""
    dataset_id, model_id = f.make_dataset(), _model()
    page = client.get(f"/models/{model_id}").get_data(as_text=True)
    assert 'id="evaluate-form"' in page and "Not evaluated yet." in page
    response = client.post(f"/models/{model_id}", data={"dataset_id": str(dataset_id)})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "evaluate")]
    assert job_id[:8] in client.get(f"/models/{model_id}").get_data(as_text=True)
    response = client.post(f"/models/{model_id}", data={"dataset_id": str(dataset_id), "label_column": "nope"})
    assert response.status_code == 400 and "nope" in response.get_data(as_text=True) and len(sent) == 1
