"""The train form of question answering (issue 18): its question, context and answers columns, and a job started
from it; the other task types' fields and options are left out of the request."""
from __future__ import annotations

import csv
import io
import json
import re

from core.db import db
from core.schema import Job

from . import factories as f



def _qa_csv() -> bytes:
    """A CSV whose answers column holds JSON cells (what the CSV shape of a QA dataset is)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "context", "answers"])
    for q, c, a in [("where?", "Bob lives in Paris", "Paris"), ("who?", "Ann left early", "Ann")]:
        writer.writerow([q, c, json.dumps({"text": [a], "answer_start": [c.index(a)]})])
    return out.getvalue().encode()


def _qa_form(dataset_id: int, **overrides) -> dict:
    data = {"dataset_id": str(dataset_id), "task_type": "question-answering", "family": "bert",
            "question_column": "question", "context_column": "context", "answers_column": "answers", "epochs": "2",
            "max_length": "128", "doc_stride": "32", "metric": "macro_f1", "validation_split": "0.2",
            # what a browser posts from the hidden fields of the other task types: left out of the request
            "text_column": "question", "label_column": "answers", "tokens_column": "question", "stride": "32",
            "label_separator": "|", "text_normalization": "none", "pooling": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_train_form_shows_the_qa_columns(client):
    dataset_id = f.make_dataset(_qa_csv(), name="qa")
    page = client.get(f"/train?dataset_id={dataset_id}&task_type=question-answering").get_data(as_text=True)
    assert '<option selected value="question-answering">' in page
    for name in ("question", "context", "answers"):
        select = re.search(rf'<select id="{name}_column".*?</select>', page, re.S).group(0)
        assert f'<option selected value="{name}">' in select and '<option value="">default</option>' in select
    assert re.search(r'class="field qa-only\s*" id="field-context_column"', page)
    assert re.search(r'id="field-doc_stride" data-families="[^"]+" data-task-types="question-answering"', page)


def test_train_form_request_data_and_job(app, client, sent):
    from web.forms import TrainForm

    with app.test_request_context(method="POST", data=_qa_form(7, answers_column="")):
        form = TrainForm()
        form.dataset_id.choices = [(7, "qa")]
        assert form.validate(), form.errors
        data = form.to_request_data()
    assert data["task_type"] == "question-answering" and data["doc_stride"] == 32
    assert data["question_column"] == "question" and data["context_column"] == "context"
    for absent in ("answers_column", "text_column", "label_column", "tokens_column", "stride", "label_separator",
                   "text_normalization", "pooling", "metric"):
        assert absent not in data, absent

    dataset_id = f.make_dataset(_qa_csv(), name="qa")
    response = client.post("/train", data=_qa_form(dataset_id, name="reader"))
    assert response.status_code == 302, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "train")]
    with db.session() as session:
        params = session.get(Job, job_id).params
    assert (params["task_type"], params["context_column"], params["answers_column"]) == \
        ("question-answering", "context", "answers")
    assert params["max_length"] == 128 and params["metric"] == "f1"


def test_classify_form_sends_questions_and_the_job_page_highlights_answers(client, sent):
    from core.schema import Prediction

    model_id = f.make_model(tasks={"answer": ["start", "end"]}, name="reader",
                            params={"family": "bert", "task_type": "question-answering", "context_column": "context",
                                    "question_column": "question", "answers_column": "answers"})
    page = client.get(f"/classify?model_id={model_id}").get_data(as_text=True)
    assert f"[{model_id}]" in page  # data-qa-models
    response = client.post("/classify", data={"model_id": str(model_id), "texts": "where?\nwho?",
                                              "text_pairs": "Bob lives in <b>Paris</b>\nAnn left"})
    assert response.status_code == 302, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "classify")]
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job.params["input_kind"] == "questions"
        assert job.inputs == [["where?", "Bob lives in <b>Paris</b>"], ["who?", "Ann left"]]
    f.start(job_id)
    results = [{"question": "where?", "answer": "Paris", "score": 0.9, "start": 16, "end": 21},
               {"question": "who?", "answer": "", "score": 0.6, "start": 0, "end": 0}]
    with db.session() as session:
        for i, ((question, context), result) in enumerate(zip(job.inputs, results)):
            session.add(Prediction(job_id=job_id, index=i, text=question, text_pair=context, result=result,
                                   label="answered" if result["answer"] else "no_answer", score=result["score"],
                                   scores={}))
    f.succeed(job_id)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "<th>Context</th>" in page and "<th>Answer</th>" in page
    # the answer marked inside the (escaped) context
    assert re.search(r'Bob lives in &lt;b&gt;<mark class="ent [^"]*" data-entity="answer"[^>]*>Paris'
                     r'<span class="ent-label">answer</span></mark>&lt;/b&gt;', page)
    assert "no answer" in page
