"""The train form's span data (issue 17): for token classification, "text + character spans" instead of "tokens +
tags" -- the choice guessed from the dataset's columns, the spans column select, the request's text_column and
spans_column, and the API's refusals (bad spans, a tokens dataset) shown on the form."""
from __future__ import annotations

import html
import json
import re

from core.db import db
from core.schema import Job

from . import factories as f
from .test_token_pages import TOKEN_CSV


def _span_csv(*rows: tuple[str, list[dict]]) -> bytes:
    """A CSV of a text column, a column of entity spans (JSON, as a JSON Lines upload stores them) and an id."""
    lines = ["id,text,entities"]
    for i, (text, spans) in enumerate(rows):
        lines.append(f"{i}," + ",".join('"' + v.replace('"', '""') + '"' for v in (text, json.dumps(spans))))
    return ("\n".join(lines) + "\n").encode()


SPAN_CSV = _span_csv(("Bob lives in Paris", [{"start": 0, "end": 3, "label": "person"},
                                              {"start": 13, "end": 18, "label": "location"}]),
                     ("Ann Lee left", [{"start": 0, "end": 7, "label": "person"}]))


def _select(page: str, name: str) -> str:
    return re.search(rf'<select id="{name}".*?</select>', page, re.S).group(0)


def _span_form(dataset_id: int, **overrides) -> dict:
    data = {"dataset_id": str(dataset_id), "task_type": "token-classification", "token_data": "spans",
            "family": "bert", "text_column": "text", "spans_column": "entities", "epochs": "2", "max_length": "64",
            "stride": "16", "validation_split": "0.2",
            # what a browser posts from the hidden fields of tokens + tags data and of text classification
            "tokens_column": "id", "tags_column": "entities", "label_column": "id", "label_separator": "|"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_span_dataset_preselects_span_data(client):
    dataset_id = f.make_dataset(SPAN_CSV, name="spans")
    page = client.get(f"/train?dataset_id={dataset_id}&task_type=token-classification").get_data(as_text=True)
    assert re.findall(r'<option (?:selected )?value="(\w+)"', _select(page, "token_data")) == ["tokens", "spans"]
    assert '<option selected value="spans">' in _select(page, "token_data")
    assert '<option selected value="entities">' in _select(page, "spans_column")
    assert '<option selected value="text">' in _select(page, "text_column")
    # the spans column is token-only spans-data, the text column text-only and spans-data (train.js shows each)
    assert re.search(r'class="field token-only spans-data\s*" id="field-spans_column"', page)
    assert re.search(r'class="field text-only spans-data\s*" id="field-text_column"', page)
    assert re.search(r'class="field token-only\s*" id="field-token_data"', page)
    # the names train.js guesses from are the page's
    names = json.loads(html.unescape(re.search(r'data-column-names="([^"]*)"', page).group(1)))
    assert names["spans"] == ["entities", "spans", "annotations", "label"] and "data" in names["spans_text"]
    # a Label Studio export's columns: its annotations and data (a JSON object of the text)
    studio = 'id,data,annotations\n1,"{""text"": ""Bob""}","[]"\n'.encode()
    studio_id = f.make_dataset(studio, name="studio")
    page = client.get(f"/train?dataset_id={studio_id}&task_type=token-classification").get_data(as_text=True)
    assert '<option selected value="spans">' in _select(page, "token_data")
    assert '<option selected value="annotations">' in _select(page, "spans_column")
    assert '<option selected value="data">' in _select(page, "text_column")
    # a tokens dataset keeps tokens + tags
    tokens_id = f.make_dataset(TOKEN_CSV, name="ner")
    page = client.get(f"/train?dataset_id={tokens_id}&task_type=token-classification").get_data(as_text=True)
    assert '<option selected value="tokens">' in _select(page, "token_data")


def test_guess_token_data():
    from web.pages.train import guess_token_data

    assert guess_token_data(["text", "entities"]) == "spans"
    assert guess_token_data(["id", "data", "annotations"]) == "spans"  # a Label Studio export
    assert guess_token_data(["tokens", "tags", "spans"]) == "tokens"
    assert guess_token_data(["text", "label"]) == "tokens"  # a text dataset's label is no span column


def test_span_form_request_data(app):
    from web.forms import TrainForm

    with app.test_request_context(method="POST", data=_span_form(7)):
        form = TrainForm()
        form.dataset_id.choices = [(7, "spans")]
        assert form.validate(), form.errors
        data = form.to_request_data()
    assert data["text_column"] == "text" and data["spans_column"] == "entities"
    for absent in ("tokens_column", "tags_column", "label_column", "label_columns", "label_separator"):
        assert absent not in data, absent
    # tokens + tags data: the (hidden) spans column is not sent, nor the text column
    with app.test_request_context(method="POST", data=_span_form(7, token_data="tokens", tags_column="tags")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "spans")]
        assert form.validate(), form.errors
        data = form.to_request_data()
    assert data["tokens_column"] == "id" and "spans_column" not in data and "text_column" not in data
    # span data needs its spans column (text classification does not)
    with app.test_request_context(method="POST", data=_span_form(7, spans_column="")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "spans")]
        assert not form.validate()
        assert form.errors == {"spans_column": ["choose the column of entity spans"]}
    with app.test_request_context(method="POST", data=_span_form(7, spans_column="", task_type="text-classification",
                                                                 label_column="entities")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "spans")]
        assert form.validate(), form.errors
        assert "spans_column" not in form.to_request_data()


def test_span_form_starts_a_token_job(client, sent):
    dataset_id = f.make_dataset(SPAN_CSV, name="spans")
    response = client.post("/train", data=_span_form(dataset_id, name="spans-ner"))
    assert response.status_code == 302, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "train")]
    with db.session() as session:
        params = session.get(Job, job_id).params
    assert params["task_type"] == "token-classification" and params["spans_column"] == "entities"
    assert params["text_column"] == "text" and params["tokens_column"] is None and params["tags_column"] is None
    assert params["label_column"] == "entities"  # the API reads the labels from the spans


def test_span_form_shows_the_api_errors(client, sent):
    bad = _span_csv(("Bob lives in Paris", [{"start": 0, "end": 3, "label": "person"}]),
                    ("Ann", [{"start": 0, "end": 40, "label": "person"}]))  # past the text's end
    dataset_id = f.make_dataset(bad, name="bad")
    response = client.post("/train", data=_span_form(dataset_id))
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 400
    assert "span [0, 40) is outside the text of 3 characters" in page
    # a column that is not there, and the text column as the spans column: each the API's message
    good_id = f.make_dataset(SPAN_CSV, name="spans")
    response = client.post("/train", data=_span_form(good_id, spans_column="nope"))
    assert response.status_code == 400
    assert "column(s) 'nope' not in the dataset" in html.unescape(response.get_data(as_text=True))
    response = client.post("/train", data=_span_form(good_id, spans_column="text"))
    assert response.status_code == 400
    assert "text_column and spans_column must differ" in html.unescape(response.get_data(as_text=True))
    # the text column holds no spans: the API's reason, not a 500
    response = client.post("/train", data=_span_form(good_id, spans_column="id"))
    assert response.status_code == 400
    assert "row 1: column 'id' must hold a JSON array of spans" in html.unescape(response.get_data(as_text=True))
    assert sent == []
