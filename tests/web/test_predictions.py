"""GET /api/v1/jobs/<id>/predictions for single-task and multitask models."""
from __future__ import annotations

import pytest

from web import schemas

from . import factories as f
from .helpers import assert_error


def test_single_task_shape_and_order(client):
    model_id = f.make_model()
    texts = ["good", "bad", "fine", "meh"]
    job_id = f.make_classify_job(model_id, texts)
    f.start(job_id)
    f.add_single_task_predictions(job_id, texts, order=[3, 0, 2, 1])  # written out of order
    f.succeed(job_id)
    page = client.get(f"/api/v1/jobs/{job_id}/predictions").json
    schemas.PredictionPage.model_validate(page)
    assert page["total"] == 4 and page["job_status"] == "succeeded" and page["text_count"] == 4
    assert [item["index"] for item in page["items"]] == [0, 1, 2, 3]
    first = page["items"][0]
    assert set(first) == {"index", "text", "label", "score", "scores"}
    assert first["text"] == "good" and first["label"] == "pos"
    assert first["score"] == pytest.approx(0.8) and first["scores"] == pytest.approx({"neg": 0.2, "pos": 0.8})


def test_multitask_shape(client):
    model_id = f.make_model(family="multitask", tasks={"label": ["neg", "pos"], "topic": ["film", "music"]})
    job_id = f.make_classify_job(model_id, ["a", "b"])
    f.start(job_id)
    f.add_multitask_predictions(job_id, ["a", "b"])
    page = client.get(f"/api/v1/jobs/{job_id}/predictions").json
    schemas.PredictionPage.model_validate(page)
    item = page["items"][0]
    assert set(item) == {"index", "text", "tasks"}
    assert set(item["tasks"]) == {"label", "topic"}
    assert item["tasks"]["topic"] == {"label": "film", "score": 0.6, "scores": {"film": 0.6, "music": 0.4}}


def test_pagination_and_partial_results(client):
    model_id = f.make_model()
    texts = [f"t{i}" for i in range(7)]
    job_id = f.make_classify_job(model_id, texts)
    f.start(job_id)
    f.add_single_task_predictions(job_id, texts, order=[0, 1, 2, 3, 4])  # still running: 5 of 7 so far
    page = client.get(f"/api/v1/jobs/{job_id}/predictions?offset=2&limit=2").json
    assert [i["index"] for i in page["items"]] == [2, 3]
    assert page["total"] == 5 and page["text_count"] == 7 and page["job_status"] == "running"
    assert client.get(f"/api/v1/jobs/{job_id}/predictions?offset=10").json["items"] == []


def test_queued_job_has_no_predictions_yet(client):
    job_id = f.make_classify_job(f.make_model(), ["x"])
    page = client.get(f"/api/v1/jobs/{job_id}/predictions").json
    assert page["items"] == [] and page["total"] == 0 and page["job_status"] == "queued"


@pytest.mark.parametrize("query", ["offset=-1", "offset=abc", "limit=0", "limit=1001", "limit=1.5"])
def test_bad_offset_or_limit_is_400(client, query):
    job_id = f.make_classify_job(f.make_model(), ["x"])
    assert_error(client.get(f"/api/v1/jobs/{job_id}/predictions?{query}"), 400, "invalid_parameter")


def test_unknown_job_is_404(client):
    assert_error(client.get("/api/v1/jobs/nope/predictions"), 404, "not_found")


def test_train_job_is_409(client):
    job_id = f.make_train_job(f.make_dataset())
    error = assert_error(client.get(f"/api/v1/jobs/{job_id}/predictions"), 409, "not_a_classify_job")
    assert "train job" in error["message"]


def test_label_filter_counts_and_pages_the_matching_rows(client):
    model_id = f.make_model()
    texts = [f"t{i}" for i in range(7)]
    job_id = f.make_classify_job(model_id, texts)
    f.start(job_id)
    f.add_single_task_predictions(job_id, texts)  # even indices pos, odd neg
    f.succeed(job_id)
    page = client.get(f"/api/v1/jobs/{job_id}/predictions?label=pos").json
    schemas.PredictionPage.model_validate(page)
    assert [i["index"] for i in page["items"]] == [0, 2, 4, 6] and page["total"] == 4
    page = client.get(f"/api/v1/jobs/{job_id}/predictions?label=neg&offset=1&limit=1").json
    assert [i["index"] for i in page["items"]] == [3] and page["total"] == 3
    page = client.get(f"/api/v1/jobs/{job_id}/predictions?label=nothing").json
    assert page["items"] == [] and page["total"] == 0
    assert client.get(f"/api/v1/jobs/{job_id}/predictions?label=").json["total"] == 7  # empty: no filter


def test_label_filter_on_a_multitask_job_uses_the_first_task(client):
    model_id = f.make_model(family="multitask", tasks={"label": ["neg", "pos"], "topic": ["film", "music"]})
    job_id = f.make_classify_job(model_id, ["a", "b"])
    f.start(job_id)
    f.add_multitask_predictions(job_id, ["a", "b"])  # label pos, topic film
    assert client.get(f"/api/v1/jobs/{job_id}/predictions?label=pos").json["total"] == 2
    assert client.get(f"/api/v1/jobs/{job_id}/predictions?label=film").json["total"] == 0


def test_id_only_for_rows_with_a_row_id(client):
    model_id = f.make_model()
    job_id = f.make_dataset_classify_job(model_id, f.make_dataset(), id_column="topic")
    items = [{"index": i, "text": t, "label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9}, "row_id": r}
             for i, (t, r) in enumerate([("a", "film-1"), ("b", None)])]
    f.finished(job_id, items)
    page = client.get(f"/api/v1/jobs/{job_id}/predictions").json
    schemas.PredictionPage.model_validate(page)
    assert page["items"] == [
        {"index": 0, "text": "a", "label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9}, "id": "film-1"},
        {"index": 1, "text": "b", "label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9}},
    ]


def test_id_on_multitask_items(client):
    model_id = f.make_model(family="multitask", tasks={"label": ["neg", "pos"], "topic": ["film", "music"]})
    job_id = f.make_dataset_classify_job(model_id, f.make_dataset(), id_column="topic")
    tasks = {"label": {"label": "pos", "score": 0.7, "scores": {"neg": 0.3, "pos": 0.7}},
             "topic": {"label": "film", "score": 0.6, "scores": {"film": 0.6, "music": 0.4}}}
    f.finished(job_id, [{"index": 0, "text": "a", "label": "pos", "score": 0.7, "scores": tasks["label"]["scores"],
                         "tasks": tasks, "row_id": "42"}])
    item = client.get(f"/api/v1/jobs/{job_id}/predictions").json["items"][0]
    assert item == {"index": 0, "text": "a", "tasks": tasks, "id": "42"}


def test_a_running_multi_label_job_offers_every_label_of_the_model(client):
    """Before the counts exist (job running), the page's filter offers the model's labels: any may be among a
    text's labels, even one that is never the top-scoring label."""
    from core.db import db
    from core.results import insert_predictions

    model_id = f.make_model(tasks={"tags": ["news", "sport", "tech"]}, params={"multi_label": True})
    job_id = f.make_classify_job(model_id, ["a", "b"])
    f.start(job_id)
    with db.session() as session:
        insert_predictions(session, job_id, [
            {"index": 0, "text": "a", "label": "sport", "score": 0.9, "scores": {}, "labels": ["sport", "news"]},
            {"index": 1, "text": "b", "label": "sport", "score": 0.7, "scores": {}, "labels": ["sport"]}])
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    for label in ("news", "sport", "tech"):
        assert f'<option value="{label}">' in html or f'<option value="{label}" ' in html, label
    assert client.get(f"/api/v1/jobs/{job_id}/predictions?label=news").json["total"] == 1
