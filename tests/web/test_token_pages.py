"""The web pages of token classification (issue 17): the train form's task type, entities highlighted inline on the
job page, the entity-type filter, the classify page's aggregation strategy, the model pages' task type and tags."""
from __future__ import annotations

import html
import json
import re

from core.db import db
from core.schema import Job, Prediction, TrainedModel

from . import factories as f

TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]
TOKEN_PARAMS = {"family": "bert", "task_type": "token-classification", "tokens_column": "tokens",
                "tags_column": "tags"}


def _cells(*sentences: tuple[list[str], list[str]]) -> bytes:
    """A CSV of a tokens and a tags column (JSON arrays, as a JSONL or CoNLL upload stores them) plus a note."""
    lines = ["note,tokens,tags"]
    for tokens, tags in sentences:
        lines.append("x," + ",".join('"' + json.dumps(v).replace('"', '""') + '"' for v in (tokens, tags)))
    return ("\n".join(lines) + "\n").encode()


TOKEN_CSV = _cells((["Bob", "lives", "in", "Paris"], ["B-person", "O", "O", "B-location"]),
                   (["Ann", "Lee", "left"], ["B-person", "I-person", "O"]))


def token_model(owner_id: int | None = None, tags: list[str] = TAGS) -> int:
    return f.make_model(tasks={"tags": tags}, name="ner", params=TOKEN_PARAMS, owner_id=owner_id)


ENTITY_TEXT = "Bob met <script>alert(1)</script> in Paris"
ENTITIES = [{"entity_group": "person", "score": 0.987, "word": "Bob", "start": 0, "end": 3},
            {"entity_group": "location", "score": 0.5, "word": "Paris", "start": 37, "end": 42}]


def token_job(model_id: int, owner_id: int | None = None) -> str:
    """A finished classify job of ``model_id`` with a raw text's entities and a pre-tokenized sentence's tags."""
    job_id = f.make_classify_job(model_id, [ENTITY_TEXT, "Ann Lee left"], owner_id=owner_id)
    f.start(job_id)
    results = [{"entities": ENTITIES},
               {"tokens": ["Ann", "Lee", "left"], "tags": ["B-person", "I-person", "O"], "scores": [0.9, 0.8, 0.99]}]
    with db.session() as session:
        for i, (text, result) in enumerate(zip([ENTITY_TEXT, "Ann Lee left"], results)):
            session.add(Prediction(job_id=job_id, index=i, text=text, result=result, label="person", score=0.9,
                                   scores={}, labels=sorted({"person", "location"} if i == 0 else {"person"})))
    f.succeed(job_id)
    return job_id


# ---------------------------------------------------------------------------------------------------- train form


def test_train_form_offers_the_task_types(client):
    dataset_id = f.make_dataset(TOKEN_CSV, name="ner")
    page = client.get(f"/train?dataset_id={dataset_id}").get_data(as_text=True)
    assert '<option selected value="text-classification">Text classification</option>' in page
    assert 'value="token-classification">Token classification' in page
    # ?task_type= preselects; the tokens and tags selects offer the dataset's columns, "tokens"/"tags" chosen
    page = client.get(f"/train?dataset_id={dataset_id}&task_type=token-classification").get_data(as_text=True)
    assert '<option selected value="token-classification">' in page
    tokens = re.search(r'<select id="tokens_column".*?</select>', page, re.S).group(0)
    tags = re.search(r'<select id="tags_column".*?</select>', page, re.S).group(0)
    assert '<option selected value="tokens">' in tokens and '<option selected value="tags">' in tags
    assert '<option value="note">' in tokens
    # the text fields carry text-only, the token fields token-only (train.js hides the others)
    assert re.search(r'class="field token-only tokens-data\s*" id="field-tokens_column"', page)
    assert re.search(r'class="field single-column text-only\s*" id="field-label_column"', page)
    # options say the task types they apply to, like their families
    assert re.search(r'id="field-stride" data-families="[^"]+" data-task-types="token-classification"', page)
    assert re.search(r'id="field-multi_label" data-families="[^"]+" data-task-types="text-classification"', page)
    assert re.search(r'id="field-text_template" data-families="[^"]+" data-task-types="text-classification"', page)
    assert re.search(r'id="field-epochs" data-families="[^"]+" data-task-types="text-classification '
                     r'token-classification[^"]*"', page)
    # unknown ?task_type=: the default
    page = client.get(f"/train?dataset_id={dataset_id}&task_type=nope").get_data(as_text=True)
    assert '<option selected value="text-classification">' in page


def _token_form(dataset_id: int, **overrides) -> dict:
    data = {"dataset_id": str(dataset_id), "task_type": "token-classification", "family": "bert",
            "tokens_column": "tokens", "tags_column": "tags", "epochs": "2", "max_length": "64", "stride": "16",
            "metric": "macro_f1", "validation_split": "0.2", "lstm_hidden": "128", "bidirectional": "y",
            # what a browser posts from the hidden text-classification fields: left out of the request
            "text_column": "note", "label_column": "note", "label_separator": "|", "text_normalization": "none",
            "pooling": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_train_form_request_data_for_token_classification(app):
    from web.forms import TrainForm

    with app.test_request_context(method="POST", data=_token_form(7, text_template="{note}", multi_label="y")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "ner")]
        assert form.validate(), form.errors
        data = form.to_request_data()
    assert data["task_type"] == "token-classification"
    assert data["tokens_column"] == "tokens" and data["tags_column"] == "tags" and data["stride"] == 16
    for absent in ("text_column", "text_pair_column", "label_column", "label_columns", "label_separator",
                   "text_normalization", "multi_label", "text_template", "pooling", "metric"):
        assert absent not in data, absent  # text-classification fields and options; macro_f1 is not a token metric
    with app.test_request_context(method="POST", data=_token_form(7, metric="accuracy")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "ner")]
        assert form.validate() and form.to_request_data()["metric"] == "accuracy"


def test_train_form_starts_a_token_job(client, sent):
    dataset_id = f.make_dataset(TOKEN_CSV, name="ner")
    response = client.post("/train", data=_token_form(dataset_id, family="bert_lstm", name="tagger"))
    assert response.status_code == 302, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "train")]
    with db.session() as session:
        params = session.get(Job, job_id).params
    assert params["task_type"] == "token-classification" and params["family"] == "bert_lstm"
    assert params["tokens_column"] == "tokens" and params["tags_column"] == "tags" and params["stride"] == 16
    assert params["metric"] == "f1" and params["lstm_hidden"] == 128 and not params.get("multi_label")
    assert params["text_column"] is None


def test_train_form_text_classification_sends_its_task_type(client, sent):
    dataset_id = f.make_dataset()
    data = {"dataset_id": str(dataset_id), "family": "bert", "text_column": "text", "label_column": "label",
            "tokens_column": "text", "tags_column": "label", "stride": "16"}
    response = client.post("/train", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        params = session.get(Job, sent[0][0]).params
    assert params["task_type"] == "text-classification" and params["label_column"] == "label"
    assert params["tokens_column"] is None and params["metric"] == "macro_f1"


def test_train_form_token_errors_shown_on_the_fields(client, sent):
    dataset_id = f.make_dataset(TOKEN_CSV, name="ner")
    response = client.post("/train", data=_token_form(dataset_id, tags_column="nope"))
    assert response.status_code == 400
    assert "column(s) 'nope' not in the dataset" in html.unescape(response.get_data(as_text=True))
    response = client.post("/train", data=_token_form(dataset_id, family="multitask"))
    assert response.status_code == 400 and "multitask" in response.get_data(as_text=True)
    response = client.post("/train", data=_token_form(dataset_id, tags_column="note"))  # one distinct tag
    assert response.status_code == 400
    assert sent == []


# ---------------------------------------------------------------------------------------------------- job page


def _marks(page: str) -> list[tuple[str, str, str, str]]:
    """``(class, data-entity, title, marked text)`` of every entity mark."""
    return [(cls, kind, html.unescape(title), text) for cls, kind, title, text in re.findall(
        r'<mark class="([^"]+)" data-entity="([^"]*)" title="([^"]*)">(.*?)<span class="ent-label">', page)]


def test_job_page_highlights_entities(client):
    model_id = token_model()
    job_id = token_job(model_id)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    marks = _marks(page)
    assert [(kind, title, text) for _, kind, title, text in marks] == [
        ("person", "person · score 0.987", "Bob"), ("location", "location · score 0.5", "Paris")]
    from web.pages.entities import palette_class

    assert marks[0][0] == f"ent {palette_class('person')}" and marks[1][0] == f"ent {palette_class('location')}"
    assert '<span class="ent-label">person</span></mark>' in page
    # the text between the entities is escaped, never markup
    assert "<script>alert(1)</script>" not in page
    assert " met &lt;script&gt;alert(1)&lt;/script&gt; in " in page
    # a pre-tokenized sentence: its tokens, each tagged one with its tag (score on hover)
    cell = re.search(r'<td class="text-cell tokens-cell">(.*?)</td>', page, re.S).group(1)
    assert '<span class="tok">left</span>' in cell
    assert re.search(r'<span class="tok tok-tagged ent-\d" title="B-person · score 0.9">Ann'
                     r'<span class="tok-tag">B-person</span></span>', cell)
    assert "Entities" in page and "×" not in page  # each type once per row


def test_job_page_label_filter_offers_entity_types(client):
    model_id = token_model()
    job_id = token_job(model_id)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    select = re.search(r'<select name="label" id="label-select">(.*?)</select>', page, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)"', select) == ["", "location", "person"]
    assert "Entity type" in page
    filtered = client.get(f"/jobs/{job_id}?label=location").get_data(as_text=True)
    assert [m[3] for m in _marks(filtered)] == ["Bob", "Paris"] and 'class="text-cell tokens-cell"' not in filtered
    assert re.findall(r'<tr data-index="(\d+)">', filtered) == ["0"]


def test_label_filter_of_plain_tags_and_bioes():
    from web.pages.entities import tag_types

    assert tag_types(["O", "NOUN", "VERB", "ADJ"]) == ["ADJ", "NOUN", "VERB"]
    assert tag_types(["O", "S-org", "B-org", "E-org", "I-loc", "U-misc"]) == ["loc", "misc", "org"]


def test_highlight_entities_skips_bad_offsets_and_escapes():
    from web.pages.entities import highlight_entities

    text = "a<b> & c"
    out = str(highlight_entities(text, [
        {"entity_group": "x", "score": 0.5, "start": 1, "end": 4},
        {"entity_group": "y", "score": 0.5, "start": 2, "end": 6},  # overlaps the first
        {"entity_group": "z", "score": 0.5, "start": 5, "end": 99},  # past the end
        {"entity_group": '"><script>', "score": 0.5, "start": 7, "end": 8}]))
    assert out.startswith('a<mark class="ent ent-') and "&lt;b&gt;<span" in out
    assert " &amp; " in out and "<script>" not in out and 'data-entity="&#34;&gt;&lt;script&gt;"' in out
    assert out.endswith('c<span class="ent-label">&#34;&gt;&lt;script&gt;</span></mark>')
    assert str(highlight_entities("plain <i>", [])) == "plain &lt;i&gt;"


def test_text_job_page_unchanged(client):
    model_id = f.make_model()
    job_id = f.make_classify_job(model_id, ["great", "bad"])
    f.start(job_id)
    f.add_single_task_predictions(job_id, ["great", "bad"])
    f.succeed(job_id)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "<mark" not in page and "<th>Label</th><th>Score</th>" in page and "Predicted label" in page


# ---------------------------------------------------------------------------------------------------- classify


def test_classify_page_aggregation_strategy_for_token_models(client, sent):
    text_model = f.make_model()
    ner = token_model()
    page = client.get(f"/classify?model_id={ner}").get_data(as_text=True)
    select = re.search(r'<select id="aggregation_strategy".*?</select>', page, re.S).group(0)
    assert re.findall(r'value="([^"]+)"', select) == ["first", "average", "max", "simple", "none"]
    assert '<option selected value="first">' in select
    assert re.search(r'class="field token-only\s*" id="field-aggregation_strategy"', page)
    assert f'data-token-models="[{ner}]"' in page
    response = client.post("/classify", data={"model_id": str(ner), "texts": "Bob lives in Paris\nAnn left",
                                              "aggregation_strategy": "max"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        job = session.get(Job, sent[-1][0])
        assert job.params["aggregation_strategy"] == "max" and job.inputs == ["Bob lives in Paris", "Ann left"]
    # a text model: the (hidden) strategy is not sent
    response = client.post("/classify", data={"model_id": str(text_model), "texts": "fine",
                                              "aggregation_strategy": "first"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        assert "aggregation_strategy" not in session.get(Job, sent[-1][0]).params


# ---------------------------------------------------------------------------------------------------- models


def test_model_page_lists_tags_and_entity_types(client):
    ner = token_model()
    text_model = f.make_model()
    page = client.get(f"/models/{ner}").get_data(as_text=True)
    assert "<dt>Task type</dt><dd>token-classification</dd>" in page
    tags = re.search(r'<dt>Tag set</dt><dd>(.*?)</dd>', page, re.S).group(1)
    assert re.findall(r'<span class="chip">([^<]*)</span>', tags) == TAGS
    types = re.search(r'<dt>Entity types</dt><dd[^>]*>(.*?)</dd>', page, re.S).group(1)
    assert re.findall(r'<span class="chip ent-\d">([^<]*)</span>', types) == ["location", "person"]
    page = client.get(f"/models/{text_model}").get_data(as_text=True)
    assert "<dt>Task type</dt><dd>text-classification</dd>" in page and "Entity types" not in page
    listing = client.get("/models").get_data(as_text=True)
    assert "<th>Task type</th>" in listing
    assert "<td>token-classification</td>" in listing and "<td>text-classification</td>" in listing


def test_model_row_without_task_type_reads_as_text_classification(client):
    with db.session() as session:
        model_id = session.get(TrainedModel, f.make_model()).id
    page = client.get(f"/models/{model_id}").get_data(as_text=True)
    assert "<dt>Task type</dt><dd>text-classification</dd>" in page


def test_token_training_job_shows_per_type_scores(client):
    dataset_id = f.make_dataset(TOKEN_CSV, name="ner")
    job_id = f.make_train_job(dataset_id, **{**TOKEN_PARAMS, "label_column": "tags", "label_columns": ["tags"]})
    f.start(job_id)
    metrics = {"f1": 0.75, "precision": 0.8, "recall": 0.7, "accuracy": 0.9, "support": 10, "tokens": 40,
               "per_type": {"location": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 4},
                            "person": {"precision": 0.7, "recall": 0.8, "f1": 0.7467, "support": 6}}}
    f.succeed(job_id, metrics=metrics)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    cards = re.findall(r'<div class="card metric metric-key"><div class="metric-value">([^<]+)</div>'
                       r'<div class="metric-name">([^<]+)</div>', page)
    assert cards == [("0.75", "f1"), ("0.8", "precision"), ("0.7", "recall"), ("0.9", "accuracy")]
    assert '<h3 class="table-title">Per entity type</h3>' in page
    assert re.search(r'<tr><td><span class="chip">location</span></td><td>1</td><td>0.5</td>\s*<td>0.6667</td>'
                     r'<td>4</td></tr>', page)
