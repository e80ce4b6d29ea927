"""Evaluating token models (issue 17): the model page offers only datasets of the model's task type (token datasets
for a token model, datasets of texts for a text model), the API refuses a dataset of the other kind with a clear
422, and an evaluate job's page shows entity precision / recall / F1 per type with support and token accuracy."""
from __future__ import annotations

import html
import io
import json
import re

import pytest
from sqlalchemy import func, select, update

from core.db import db
from core.schema import Dataset, Job, TrainedModel

from . import factories as f
from .helpers import assert_error
from .test_token_pages import TAGS, TOKEN_CSV, token_model

CONLL = "Bob\tB-person\nlives\tO\nin\tO\nParis\tB-location\n\nAnn\tB-person\nLee\tI-person\nleft\tO\n"
TEXT_CSV = b"text,label\ngreat movie,pos\nawful plot,neg\n"
TRAINED_TEXT = {"family": "bert", "text_column": "text", "label_column": "label", "label_columns": ["label"]}


def _upload(client, content: bytes, filename: str) -> int:
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(content), filename)},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _text_model() -> int:
    model_id = f.make_model()
    with db.session() as session:
        session.execute(update(TrainedModel).where(TrainedModel.id == model_id).values(params=TRAINED_TEXT))
    return model_id


def _jobs() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def _options(page: str) -> list[str]:
    select_ = re.search(r'<select id="dataset_id".*?</select>', page, re.S).group(0)
    return re.findall(r'<option(?: selected)? value="(\d+)"', select_)


# ---------------------------------------------------------------------------------------------------- the API


def test_a_token_model_is_refused_a_text_dataset_and_a_text_model_a_token_dataset(client, sent):
    conll = _upload(client, CONLL.encode(), "ner.conll")
    texts = _upload(client, TEXT_CSV, "reviews.csv")
    ner, text_model = token_model(), _text_model()

    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": ner, "dataset_id": texts}), 422,
                         "dataset_task_mismatch")
    assert f"dataset {texts} (reviews) cannot evaluate a token-classification model" in error["message"]
    assert "not a token dataset" in error["message"] and "CoNLL" in error["message"]
    # even naming its columns: a text column is no token list
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={
        "model_id": ner, "dataset_id": texts, "text_column": "text", "label_column": "label"}), 422,
        "dataset_task_mismatch")
    assert "not a token dataset" in error["message"]

    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": text_model, "dataset_id": conll}),
                         422, "dataset_task_mismatch")
    assert "cannot evaluate a text-classification model: it is a token dataset" in error["message"]
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={
        "model_id": text_model, "dataset_id": conll, "text_column": "tokens", "label_column": "tags"}), 422,
        "dataset_task_mismatch")
    assert "column 'tokens' holds token lists" in error["message"]
    assert _jobs() == 0 and sent == []

    # the right kinds are queued
    assert client.post("/api/v1/jobs/evaluate", json={"model_id": ner, "dataset_id": conll}).status_code == 202
    assert client.post("/api/v1/jobs/evaluate", json={"model_id": text_model, "dataset_id": texts}).status_code == 202
    assert len(sent) == 2


def test_a_dataset_with_texts_and_token_lists_fits_both_by_its_columns(client, sent):
    """JSON Lines with a text, a label, a tokens and a tags column: each model reads its own columns; a text model
    pointed at the tags column, or a token model at the text column, is told which column is wrong."""
    rows = [{"text": "Bob lives in Paris", "label": "pos", "tokens": ["Bob", "lives", "in", "Paris"],
             "tags": ["B-person", "O", "O", "B-location"]},
            {"text": "Ann Lee left", "label": "neg", "tokens": ["Ann", "Lee", "left"],
             "tags": ["B-person", "I-person", "O"]}]
    both = _upload(client, "".join(json.dumps(r) + "\n" for r in rows).encode(), "both.jsonl")
    ner, text_model = token_model(), _text_model()
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={
        "model_id": text_model, "dataset_id": both, "label_column": "tags"}), 422, "dataset_task_mismatch")
    assert "column 'tags' holds token lists" in error["message"]
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={
        "model_id": ner, "dataset_id": both, "text_column": "text"}), 422, "dataset_task_mismatch")
    assert "column 'text' does not hold token lists" in error["message"] and "'tags', 'tokens'" in error["message"]
    assert _jobs() == 0
    for model_id in (ner, text_model):
        response = client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": both})
        assert response.status_code == 202, response.get_json()
    with db.session() as session:
        params = [session.get(Job, job_id).params for job_id, _ in sent]
    assert (params[0]["tokens_column"], params[0]["tags_column"], params[0]["tags"]) == ("tokens", "tags", TAGS)
    assert params[1]["text_column"] == "text" and params[1]["label_columns"] == ["label"]


def test_a_dataset_stored_without_a_profile_is_profiled_once_to_be_judged(client, sent):
    """Rows stored before profiles were kept (the factories write none): profiled on first use, then kept."""
    tokens, texts = f.make_dataset(TOKEN_CSV, name="ner"), f.make_dataset(TEXT_CSV, name="reviews")
    ner = token_model()
    assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": ner, "dataset_id": texts}), 422,
                 "dataset_task_mismatch")
    response = client.post("/api/v1/jobs/evaluate", json={"model_id": ner, "dataset_id": tokens})
    assert response.status_code == 202, response.get_json()
    with db.session() as session:
        assert set(session.get(Dataset, tokens).profile["list_stats"]) == {"tokens", "tags"}


# ---------------------------------------------------------------------------------------------------- the model page


def test_a_token_models_page_evaluates_on_token_datasets_only(client, sent):
    conll = _upload(client, CONLL.encode(), "ner.conll")
    csv_tokens = f.make_dataset(TOKEN_CSV, name="tokens-csv")  # JSON arrays in a CSV, stored without a profile
    texts = _upload(client, TEXT_CSV, "reviews.csv")
    ner = token_model()
    page = client.get(f"/models/{ner}").get_data(as_text=True)
    assert sorted(_options(page)) == sorted([str(conll), str(csv_tokens)])
    assert "Tokens column (default: the model&#39;s)" in page and "Tags column (default: the model&#39;s)" in page
    assert "Token datasets only." in page and "token accuracy" in page
    assert 'id="no-evaluation-datasets"' not in page

    response = client.post(f"/models/{ner}", data={"dataset_id": str(conll)})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "evaluate")]
    with db.session() as session:
        params = session.get(Job, job_id).params
    assert params["task_type"] == "token-classification" and params["tokens_column"] == "tokens"
    assert job_id[:8] in client.get(f"/models/{ner}").get_data(as_text=True)

    # a text dataset posted anyway (an old tab, a crafted form): the API's reason, nothing queued
    response = client.post(f"/models/{ner}", data={"dataset_id": str(texts)})
    assert response.status_code == 400
    assert "cannot evaluate a token-classification model" in html.unescape(response.get_data(as_text=True))
    assert len(sent) == 1

    # a text model's page offers the text dataset, not the CoNLL one (the CSV's plain "note" column is a text)
    text_page = client.get(f"/models/{_text_model()}").get_data(as_text=True)
    assert sorted(_options(text_page)) == sorted([str(texts), str(csv_tokens)]) and "Text column (default" in text_page


def test_a_token_models_page_without_token_datasets_says_how_to_get_one(client):
    f.make_dataset(TEXT_CSV, name="reviews")
    page = client.get(f"/models/{token_model()}").get_data(as_text=True)
    assert _options(page) == []
    assert re.search(r'id="no-evaluation-datasets">No token dataset yet: <a href="/datasets">upload</a> a CoNLL',
                     page)


# ---------------------------------------------------------------------------------------------------- the job page


@pytest.mark.parametrize("plain", [False, True])
def test_a_token_evaluate_job_page_shows_scores_per_type_and_token_accuracy(client, plain):
    ner = token_model()
    dataset_id = f.make_dataset(TOKEN_CSV, name="ner")
    job_id = client.post("/api/v1/jobs/evaluate", json={"model_id": ner, "dataset_id": dataset_id}).json["id"]
    f.start(job_id)
    per = {"location": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 4},
           "person": {"precision": 0.7, "recall": 0.8, "f1": 0.7467, "support": 6}}
    key = "per_tag" if plain else "per_type"  # plain tags (part-of-speech) are scored per tag
    f.succeed(job_id, metrics={"f1": 0.75, "precision": 0.8, "recall": 0.7, "accuracy": 0.9125, "support": 10,
                               "tokens": 40, "examples": 2, "scheme": "plain" if plain else "IOB2", key: per})
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert '<section class="panel" id="job-metrics"><h2>Evaluation</h2>' in page
    cards = re.findall(r'<div class="card metric metric-key"><div class="metric-value">([^<]+)</div>'
                       r'<div class="metric-name">([^<]+)</div>', page)
    assert cards == [("0.75", "f1"), ("0.8", "precision"), ("0.7", "recall"), ("0.9125", "accuracy")]
    title = "Per tag" if plain else "Per entity type"
    assert f'<h3 class="table-title">{title}</h3>' in page
    rows = re.findall(r'<tr><td><span class="chip">(\w+)</span></td><td>([\d.]+)</td><td>([\d.]+)</td>\s*'
                      r'<td>([\d.]+)</td><td>(\d+)</td></tr>', page)
    assert rows == [("location", "1", "0.5", "0.6667", "4"), ("person", "0.7", "0.8", "0.7467", "6")]
