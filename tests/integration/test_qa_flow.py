"""Question answering end to end in eager mode (issue 18): a JSON Lines upload of questions trains a tiny extractive
QA model through the API, which then answers questions (character offsets into the context, no answer where the
question has none), classifies a dataset, and is evaluated (SQuAD EM / F1); bad requests are 422s."""
from __future__ import annotations

import json

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)

from tests.ml.test_qa_training import qa_examples

from .api_steps import ApiSteps, qa_jsonl
from .conftest import wait_for_job



def test_train_answer_classify_and_evaluate_a_qa_model(client, tiny_encoders):
    steps = ApiSteps(client)
    examples = qa_examples()
    dataset_id = steps.upload(qa_jsonl(examples), "qa.jsonl")
    job = steps.run_job("train", {
        "dataset_id": dataset_id, "task_type": "question-answering", "encoder": str(tiny_encoders["bert"]),
        "epochs": 40, "batch_size": 8, "max_length": 20, "doc_stride": 4, "learning_rate": 3e-3,
        "validation_split": 0.0, "dropout": 0.0, "seed": 0}, task_type="question-answering")
    model = steps.model(job["model_id"])
    assert model["task_type"] == "question-answering"

    for page in (f"/jobs/{job['id']}", f"/models/{model['id']}", "/models", "/jobs", "/classify",
                 f"/train?dataset_id={dataset_id}&task_type=question-answering"):
        assert client.get(page).status_code == 200, page
    assert "Validation exact match and F1" in client.get(f"/jobs/{job['id']}").get_data(as_text=True)

    questions = [{"question": e["question"], "context": e["context"]} for e in examples]
    answer = client.post("/api/v1/predict", json={"model_id": model["id"], "questions": questions})
    assert answer.status_code == 200, answer.get_json()
    predictions = answer.get_json()["predictions"]
    for example, prediction in zip(examples, predictions):
        gold = example["answers"][0][0] if example["answers"] else ""
        assert prediction["answer"] == gold and prediction["question"] == example["question"]
        assert prediction["answer"] == example["context"][prediction["start"]:prediction["end"]]

    classify = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "questions": questions[:2],
                                                           "top_k": 2})
    assert classify.status_code == 202, classify.get_json()
    assert wait_for_job(client, classify.get_json()["id"])["status"] == "succeeded"
    assert client.get(f"/jobs/{classify.get_json()['id']}").status_code == 200
    stored = client.get(f"/api/v1/jobs/{classify.get_json()['id']}/predictions").get_json()["items"]
    assert [len(p["answers"]) for p in stored] == [2, 2] and stored[0]["answer"] == examples[0]["answers"][0][0]
    csv = client.get(f"/api/v1/jobs/{classify.get_json()['id']}/export?format=csv").data.decode("utf-8-sig")
    lines = csv.splitlines()
    assert lines[0] == "index,question,context,rank,answer,score,start,end" and len(lines) == 1 + 2 * 2
    first_line = f"0,{examples[0]['question']},{examples[0]['context']},1,{examples[0]['answers'][0][0]},"
    assert lines[1].startswith(first_line)
    jsonl = client.get(f"/api/v1/jobs/{classify.get_json()['id']}/export?format=jsonl").data.decode()
    first = json.loads(jsonl.splitlines()[0])
    assert list(first) == ["index", "question", "context", "answer", "score", "start", "end", "answers"]

    from_dataset = steps.run_job("classify", {"model_id": model["id"], "dataset_id": dataset_id})
    rows = steps.predictions(from_dataset["id"], "?limit=100")
    assert [p["answer"] for p in rows] == [p["answer"] for p in predictions]

    evaluated = steps.run_job("evaluate", {"model_id": model["id"], "dataset_id": dataset_id})
    assert client.get(f"/jobs/{evaluated['id']}").status_code == 200
    metrics = evaluated["metrics"]
    assert metrics["exact_match"] == 1.0 and metrics["f1"] == 1.0 and metrics["examples"] == 16
    assert metrics["has_answer_f1"] == 1.0 and metrics["no_answer_accuracy"] == 1.0

    from .conftest import sample_csv

    texts_id = steps.upload(sample_csv(12), "tweets.csv")
    mismatch = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"], "dataset_id": texts_id})
    assert mismatch.status_code == 422 and mismatch.get_json()["error"]["code"] == "dataset_task_mismatch"

    # bad requests: texts to a QA model, QA options elsewhere, a question too long for the windows
    texts = client.post("/api/v1/predict", json={"model_id": model["id"], "texts": ["where?"]})
    assert texts.status_code == 422 and texts.get_json()["error"]["code"] == "questions_required"
    long = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "questions": [
        {"question": " ".join(["word"] * 40), "context": "a context"}]})  # surely too long: refused at once
    assert long.status_code == 422 and long.get_json()["error"]["code"] == "question_too_long"
    # 10 words of several word pieces each: only the tokenizer knows it is too long, so the worker fails the job
    pieces = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "questions": [
        {"question": " ".join(["zqxjvkw"] * 10), "context": "a context"}]})
    assert pieces.status_code == 202, pieces.get_json()
    failed = wait_for_job(client, pieces.get_json()["id"])
    assert failed["status"] == "failed" and failed["error"].startswith("question 1 has ")
    assert "tokens: with max_length 20 and doc_stride 4 a question may have at most 12" in failed["error"]
    extra = client.post("/api/v1/jobs/classify", json={"model_id": model["id"], "texts": ["x"], "top_k": 2})
    assert extra.status_code == 422


def test_bad_qa_training_requests_are_422(client):
    examples = qa_examples()
    bad = [dict(e) for e in examples]
    bad[1] = dict(bad[1], answers=[("Rome", 3)])
    dataset_id = ApiSteps(client).upload(qa_jsonl(bad), "bad.jsonl")
    response = client.post("/api/v1/jobs/train", json={"dataset_id": dataset_id, "task_type": "question-answering"})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "answer_mismatch"
    good_id = ApiSteps(client).upload(qa_jsonl(examples), "good.jsonl")
    for extra in ({"doc_stride": 128, "max_length": 128}, {"text_column": "question"}, {"family": "bert_lstm"}):
        response = client.post("/api/v1/jobs/train", json={"dataset_id": good_id, "task_type": "question-answering",
                                                           **extra})
        assert response.status_code == 422, (extra, response.get_json())
    missing = client.post("/api/v1/jobs/train", json={"dataset_id": good_id, "task_type": "question-answering",
                                                      "answers_column": "gold"})
    assert missing.status_code == 422 and missing.get_json()["error"]["code"] == "unknown_column"


def test_questions_go_to_question_answering_models_only():
    from core.specs import ClassifyRequest, PredictRequest
    from web.errors import ApiError
    from web.services import _check_input_kind

    questions = [{"question": "where?", "context": "in Paris"}]
    for params in ({}, {"task_type": "token-classification"}):
        try:
            _check_input_kind(PredictRequest(model_id=1, questions=questions), params)
        except ApiError as error:
            assert error.status == 422 and error.code == "questions_not_supported"
        else:
            raise AssertionError("questions were accepted by a model of another task type")
    request = ClassifyRequest(model_id=1, questions=questions, top_k=3)
    params, inputs = request.job_params()
    assert params["input_kind"] == "questions" and params["top_k"] == 3 and inputs == [["where?", "in Paris"]]
    assert ClassifyRequest.from_job_params(params, inputs).questions == request.questions


def test_a_squad_file_trains(client, tiny_encoders):
    """A nested SQuAD file on one line uploads as one row (its ``data`` cell) and trains: one example a question."""
    examples = qa_examples()
    paragraphs = [{"context": e["context"], "qas": [
        {"id": f"q{i}", "question": e["question"], "is_impossible": not e["answers"],
         "answers": [{"text": t, "answer_start": s} for t, s in e["answers"]]}]} for i, e in enumerate(examples)]
    squad = json.dumps({"version": "v2.0", "data": [{"title": "trips", "paragraphs": paragraphs}]}).encode()
    dataset_id = ApiSteps(client).upload(squad, "train-v2.0.json")
    job = ApiSteps(client).run_job("train", {
        "dataset_id": dataset_id, "task_type": "question-answering", "encoder": str(tiny_encoders["bert"]),
        "epochs": 1, "max_length": 32, "doc_stride": 8, "validation_split": 0.25})
    assert job["metrics"]["questions"] == {"train": 12, "validation": 4}


def test_a_question_too_long_for_the_tokenizer_names_its_row_across_chunks(client, tiny_encoders, monkeypatch):
    """A question only the tokenizer finds too long (10 words of several word pieces: under the web's lower bound)
    fails its classify and evaluate jobs naming its real row, 300, though the worker encodes 256 rows at a time
    (the classify job's chunks are cut to 256 here; an evaluation's are 256)."""
    import worker.jobs.classify as classify_job

    monkeypatch.setattr(classify_job, "CLASSIFY_CHUNK", 256)
    steps = ApiSteps(client)
    job = steps.run_job("train", {
        "dataset_id": steps.upload(qa_jsonl(qa_examples()), "qa.jsonl"), "task_type": "question-answering",
        "encoder": str(tiny_encoders["bert"]), "epochs": 1, "max_length": 20, "doc_stride": 4,
        "validation_split": 0.0})
    rows = [{"question": "where did Bob fly ?", "context": "Bob flew to Paris.", "answers": [("Paris", 12)]}] * 299
    rows.append({"question": " ".join(["zqxjvkw"] * 10), "context": "Bob flew to Paris.", "answers": []})
    dataset_id = steps.upload(qa_jsonl(rows), "many.jsonl")
    for kind in ("classify", "evaluate"):
        response = client.post(f"/api/v1/jobs/{kind}", json={"model_id": job["model_id"], "dataset_id": dataset_id})
        assert response.status_code == 202, response.get_json()
        failed = wait_for_job(client, response.get_json()["id"])
        assert failed["status"] == "failed" and failed["error"].startswith("row 300 has "), (kind, failed["error"])
        assert "a question may have at most 12" in failed["error"]
