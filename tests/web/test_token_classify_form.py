"""The classify page's pre-tokenized mode (issue 17): for a token model, each typed line is a sentence of
space-separated tokens sent as the API's ``tokens``; a text model refuses it with the API's reason."""
from __future__ import annotations

import html
import re

from core.db import db
from core.schema import Job

from . import factories as f
from .test_token_pages import token_model


def test_the_pretokenized_mode_is_offered_for_token_models(client):
    ner = token_model()
    page = client.get(f"/classify?model_id={ner}").get_data(as_text=True)
    assert re.search(r'class="field token-only\s*" id="field-pretokenized"', page)
    assert '<input id="pretokenized" name="pretokenized" type="checkbox" value="y">' in page
    assert "one sentence per line, tokens separated by spaces" in page


def test_pretokenized_lines_are_sent_as_tokens(client, sent):
    ner = token_model()
    response = client.post("/classify", data={"model_id": str(ner), "pretokenized": "y", "aggregation_strategy": "max",
                                              "texts": "Bob  lives in Paris\n\n  Ann Lee\tleft \n"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        job = session.get(Job, sent[-1][0])
        assert job.inputs == [["Bob", "lives", "in", "Paris"], ["Ann", "Lee", "left"]]
        assert job.params["input_kind"] == "tokens" and "aggregation_strategy" not in job.params
    # unchecked: the same lines are raw texts
    response = client.post("/classify", data={"model_id": str(ner), "texts": "Bob lives in Paris"})
    assert response.status_code == 302
    with db.session() as session:
        assert session.get(Job, sent[-1][0]).inputs == ["Bob lives in Paris"]


def test_a_text_model_refuses_pretokenized_input(client, sent):
    response = client.post("/classify", data={"model_id": str(f.make_model()), "pretokenized": "y",
                                              "texts": "great movie"})
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert "tokens (pre-tokenized sentences) are for token-classification models" in page
    assert sent == []


def test_pretokenized_goes_with_typed_texts_only(client, sent):
    ner = token_model()
    dataset_id = f.make_dataset()
    response = client.post("/classify", data={"model_id": str(ner), "pretokenized": "y", "dataset_id": str(dataset_id),
                                              "text_column": "text"})
    assert response.status_code == 400
    assert "pre-tokenized applies to the typed texts alone" in response.get_data(as_text=True)
    assert sent == []
