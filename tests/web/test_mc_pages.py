"""The train form's multiple-choice fields: the context, question and choices selects (mc-only, train.js shows them
with the label column), the request they make, and a job started from them."""
from __future__ import annotations

import html
import re

from core.db import db
from core.schema import Job

from . import factories as f

SWAG_CSV = ("sent1,sent2,ending0,ending1,ending2,label\n"
            + "".join(f"A man sits {i}.,He,eats.,sleeps.,runs.,{i % 3}\n" for i in range(12))).encode()


def _form(dataset_id: int, **overrides) -> dict:
    data = {"dataset_id": str(dataset_id), "task_type": "multiple-choice", "family": "bert", "context_column": "sent1",
            "question_column": "sent2", "choices_column": "", "label_column": "label", "epochs": "2",
            "max_length": "64", "validation_split": "0.2", "metric": "accuracy",
            # what a browser posts from the hidden fields of other task types: left out of the request
            "text_column": "sent1", "tokens_column": "sent1", "tags_column": "label", "stride": "16",
            "label_separator": "|", "text_normalization": "none", "pooling": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_train_form_has_the_multiple_choice_fields(client):
    dataset_id = f.make_dataset(SWAG_CSV, name="swag")
    page = client.get(f"/train?dataset_id={dataset_id}&task_type=multiple-choice").get_data(as_text=True)
    assert '<option selected value="multiple-choice">Multiple choice' in page
    assert re.search(r'<div class="row mc-only">', page)
    context = re.search(r'<select id="context_column".*?</select>', page, re.S).group(0)
    assert '<option selected value="sent1">' in context  # guessed from SWAG's name
    choices = re.search(r'<select id="choices_column".*?</select>', page, re.S).group(0)
    first = re.search(r'<option[^>]*>[^<]*</option>', choices).group(0)  # what a browser shows first
    assert 'value=""' in first and "the ending0, ending1, ... columns" in first


def test_train_form_request_data_for_multiple_choice(app):
    from web.forms import TrainForm

    with app.test_request_context(method="POST", data=_form(7, text_template="{sent1}")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "swag")]
        assert form.validate(), form.errors
        data = form.to_request_data()
    assert data["task_type"] == "multiple-choice" and data["context_column"] == "sent1"
    assert data["question_column"] == "sent2" and data["label_column"] == "label" and data["metric"] == "accuracy"
    for absent in ("text_column", "tokens_column", "tags_column", "choices_column", "stride", "text_template",
                   "label_separator", "text_normalization", "pooling"):
        assert absent not in data, absent


def test_train_form_starts_a_multiple_choice_job_and_shows_errors(client, sent):
    dataset_id = f.make_dataset(SWAG_CSV, name="swag")
    response = client.post("/train", data=_form(dataset_id))
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        params = session.get(Job, sent[0][0]).params
    assert params["task_type"] == "multiple-choice" and params["context_column"] == "sent1"
    assert params["question_column"] == "sent2" and params["choices_column"] is None
    response = client.post("/train", data=_form(dataset_id, choices_column="sent2"))  # not a JSON array per row
    assert response.status_code == 400
    assert "JSON array" in html.unescape(response.get_data(as_text=True))
    assert len(sent) == 1


# ---------------------------------------------------------------------------------------------------- classify


MC_PARAMS = {"family": "bert", "task_type": "multiple-choice", "context_column": "sent1", "question_column": "sent2"}


def mc_model() -> int:
    return f.make_model(tasks={"choice": ["0", "1", "2"]}, name="swag", params=MC_PARAMS)


def test_classify_page_sends_one_typed_question(client, sent):
    model_id = mc_model()
    page = client.get(f"/classify?model_id={model_id}").get_data(as_text=True)
    assert '<fieldset class="choice-only">' in page and f"data-choice-models=\"[{model_id}]\"" in page
    response = client.post("/classify", data={"model_id": str(model_id), "context": "A man sits at a piano.",
                                              "question": "He", "choices": "plays a song.\n\neats the keys.\n"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        job = session.get(Job, sent[0][0])
        assert job.params["input_kind"] == "choice_questions"
        assert job.inputs == [{"context": "A man sits at a piano.", "question": "He",
                               "choices": ["plays a song.", "eats the keys."]}]
    refused = client.post("/classify", data={"model_id": str(model_id), "context": "c", "choices": "only one"})
    assert refused.status_code == 400 and "at least 2 choices" in refused.get_data(as_text=True)
    assert len(sent) == 1


def test_job_page_marks_the_chosen_choice_with_score_bars(client):
    from core.schema import Prediction

    model_id = mc_model()
    job_id = f.make_classify_job(model_id, ["A man sits at a <b>piano</b>."])
    f.start(job_id)
    result = {"choice_index": 1, "choice": "plays.", "scores": [0.25, 0.75], "choices": ["eats.", "plays."]}
    with db.session() as session:
        session.add(Prediction(job_id=job_id, index=0, text="A man sits at a <b>piano</b>.", text_pair="He",
                               result=result, label="1", score=0.75, scores={"0": 0.25, "1": 0.75}))
    f.succeed(job_id)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "&lt;b&gt;piano&lt;/b&gt;" in page  # escaped
    chosen = re.search(r'<li class="chosen" aria-current="true">(.*?)</li>', page, re.S).group(1)
    assert "✓ plays." in chosen and "width: 75.0%" in chosen
    assert 'style="width: 25.0%"' in page


def test_training_work_counts_every_choice(settings, sent):
    """The MAX_TRAINING_WORK limit multiplies a multiple-choice row by its choices (one sequence each): three
    ending columns here, each row's own count for a list column."""
    from tests.factories import api_client, make_user
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_training_work=12 * 64 * 3)})
    user = make_user("mc-worker")
    client = api_client(app, user)
    dataset = f.make_dataset(SWAG_CSV, name="swag", owner_id=user.id)
    body = {"dataset_id": dataset, "task_type": "multiple-choice", "context_column": "sent1", "epochs": 1,
            "max_length": 64, "validation_split": 0.0}
    assert client.post("/api/v1/jobs/train", json=body).status_code == 202  # 1 x 12 x 64 x 3 = the limit
    refused = client.post("/api/v1/jobs/train", json={**body, "epochs": 2})
    assert refused.status_code == 422
    assert "the 12 rows encode as at least 36 sequences" in refused.get_json()["error"]["message"]
    # a list column: each row's own choices count (two here: within the limit; four: over it)
    listed = ("sent1,options,label\n" + "".join(f'a {i},"[""x"", ""y""]",0\n' for i in range(12))).encode()
    listed_id = f.make_dataset(listed, name="listed", owner_id=user.id)
    listed_body = {**body, "dataset_id": listed_id, "choices_column": "options"}
    assert client.post("/api/v1/jobs/train", json=listed_body).status_code == 202
    four = ("sent1,options,label\n" + "".join(f'a {i},"[""w"", ""x"", ""y"", ""z""]",0\n' for i in range(12))).encode()
    refused = client.post("/api/v1/jobs/train", json={**listed_body, "dataset_id": f.make_dataset(
        four, name="four", owner_id=user.id)})
    assert refused.status_code == 422
    assert "encode as at least 48 sequences" in refused.get_json()["error"]["message"]


def test_task_types_own_defaults_apply_when_the_form_field_is_left_empty(client, sent):
    """batch_size and max_length are left empty on the form (their placeholders name each task type's default), so a
    multiple-choice job trains with 16 rows a batch and a typed value still wins."""
    page = client.get("/train?task_type=multiple-choice").get_data(as_text=True)
    batch = re.search(r'<input[^>]*id="batch_size"[^>]*>', page).group(0)
    assert 'value=' not in batch.replace('value=""', '') and "multiple choice: 16" in html.unescape(batch)
    length = re.search(r'<input[^>]*id="max_length"[^>]*>', page).group(0)
    assert "question answering: 384" in html.unescape(length)
    dataset_id = f.make_dataset(SWAG_CSV, name="swag")
    for typed, expected in (("", 16), ("32", 32)):
        response = client.post("/train", data=_form(dataset_id, batch_size=typed))
        assert response.status_code == 302, response.get_data(as_text=True)
        with db.session() as session:
            assert session.get(Job, sent[-1][0]).params["batch_size"] == expected
