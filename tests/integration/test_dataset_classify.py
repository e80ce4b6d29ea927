"""Classifying a stored dataset's text column end to end, in Celery eager mode (the task runs inside the POST).

Upload (CSV, TSV, JSON Lines) -> ``POST /api/v1/jobs/classify`` with ``dataset_id`` + ``text_column``
(+ ``id_column``) -> predictions (with row ids) and the CSV/JSONL export; chunking, resuming a retried job, and
every bad request refused before a job row exists. The model is a tiny random-weight one saved directly (no
training), so each test runs in about a second.
"""
from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import func, select

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from core import jobs
from core.db import db
from core.results import insert_predictions
from core.schema import Dataset, Job, Prediction, TrainedModel, utcnow
from ml.batching import BatchingEngine
from ml.inference import Predictor, clear_predictor_cache
from tests.factories import save_tiny_model
from tests.web.helpers import assert_error
from worker.jobs import classify as classify_job

SINGLE_TASKS = {"sentiment": ["neg", "pos"]}
MULTI_TASKS = {"sentiment": ["neg", "neu", "pos"], "topic": ["bags", "crew"]}

# (id, text) rows; None as text: missing/null (JSON), written as an empty cell in CSV/TSV
ROWS = [
    ("t1", "@united thanks, the crew was amazing!"),
    ("t2", ""),
    ("t3", 'worst flight ever, "lost" my bag'),
    ("t4", "   "),
    ("t5", "multi\nline text, with a comma"),
    ("t6", "flight 123 lands at 5pm"),
    ("t7", "ünïcödé ✈ déjà vu"),
    ("t8", None),
    ("t9", "  padded text keeps its spaces  "),
    ("t10", "tab\tinside the text"),
    ("t11", "last row"),
]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def model_dirs(tiny_bert_dir, tokenizer, tmp_path_factory):
    base = tmp_path_factory.mktemp("dataset-classify-models")
    dirs = {
        "bert": save_tiny_model("bert", SINGLE_TASKS, tiny_bert_dir, tokenizer, base / "bert", seed=11),
        "multitask": save_tiny_model("multitask", MULTI_TASKS, tiny_bert_dir, tokenizer, base / "multitask", seed=12),
    }
    yield dirs
    clear_predictor_cache()


@pytest.fixture(scope="module")
def references(model_dirs):
    """Predictors outside the worker's cache: the unbatched answers predictions are compared with."""
    return {family: Predictor.load(path) for family, path in model_dirs.items()}


@pytest.fixture
def models(client, model_dirs) -> dict[str, int]:
    """Model rows (in this test's database) pointing at the saved tiny models: {family: model id}."""
    ids = {}
    with db.session() as session:
        for family, path in model_dirs.items():
            tasks = MULTI_TASKS if family == "multitask" else SINGLE_TASKS
            model = TrainedModel(name=f"tiny-{family}", version=1, family=family, encoder="tiny", tasks=tasks,
                                 labels=next(iter(tasks.values())), metrics={}, params={"family": family},
                                 artifact_dir=str(path))
            session.add(model)
            session.flush()
            ids[family] = model.id
    return ids


def _delimited(rows, delimiter: str, *, blank_line_after: int | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(["tweet_id", "body", "extra"])
    for i, (row_id, text) in enumerate(rows):
        writer.writerow([row_id, text or "", f"x{i}"])
        if i == blank_line_after:
            out.write("\n")  # a blank line between rows: skipped, it is not a data row
    return out.getvalue().encode("utf-8")


def _jsonl(rows) -> bytes:
    lines = []
    for i, (row_id, text) in enumerate(rows):
        value = int(row_id[1:]) if i % 3 == 0 else row_id  # some ids are JSON numbers
        lines.append(json.dumps({"tweet_id": value, "body": text, "extra": i}, ensure_ascii=False))
        if i == 4:
            lines.append("")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _expected_ids(fmt: str) -> list[str]:
    return [str(int(row_id[1:])) if fmt == "jsonl" and i % 3 == 0 else row_id for i, (row_id, _) in enumerate(ROWS)]


FILES = {
    "csv": lambda: _delimited(ROWS, ",", blank_line_after=2),
    "tsv": lambda: _delimited(ROWS, "\t", blank_line_after=5),
    "jsonl": lambda: _jsonl(ROWS),
}


def upload(client, data: bytes, filename: str, name: str = "tweets") -> dict:
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), filename), "name": name},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def classify(client, **body) -> dict:
    response = client.post("/api/v1/jobs/classify", json=body)
    assert response.status_code == 202, response.get_json()
    return client.get(f"/api/v1/jobs/{response.get_json()['id']}").get_json()


def all_items(client, job_id: str) -> list[dict]:
    items, offset = [], 0
    while True:
        page = client.get(f"/api/v1/jobs/{job_id}/predictions?offset={offset}&limit=1000").get_json()
        items += page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            assert len(items) == page["total"]
            return items


def assert_matches_reference(items: list[dict], reference: Predictor) -> None:
    expected = reference.predict([item["text"] for item in items])
    for item, want in zip(items, expected, strict=True):
        pairs = ([(item["tasks"][t], want["tasks"][t]) for t in want["tasks"]] if "tasks" in want
                 else [(item, want)])
        assert ("tasks" in item) == ("tasks" in want)
        for got, exp in pairs:
            assert got["label"] == exp["label"]
            assert got["score"] == pytest.approx(exp["score"], abs=1e-5)
            assert got["scores"] == pytest.approx(exp["scores"], abs=1e-5)


def job_count() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def stored(job_id: str) -> list[Prediction]:
    with db.session() as session:
        return session.scalars(select(Prediction).where(Prediction.job_id == job_id).order_by(Prediction.index)).all()


# ---------------------------------------------------------------- the happy path, per format


@pytest.mark.parametrize(("fmt", "family"), [("csv", "bert"), ("tsv", "bert"), ("jsonl", "bert"),
                                             ("csv", "multitask")])
def test_classify_a_dataset_column_with_row_ids(client, models, references, fmt, family):
    dataset = upload(client, FILES[fmt](), f"tweets.{fmt}")
    assert (dataset["format"], dataset["rows"]) == (fmt, len(ROWS))
    job = classify(client, model_id=models[family], dataset_id=dataset["id"], text_column="body",
                   id_column="tweet_id")
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["attempts"] == 1 and job["dataset_id"] == dataset["id"]
    assert job["params"]["text_count"] == len(ROWS)

    ids = _expected_ids(fmt)
    wanted = [(i, ids[i], text) for i, (_, text) in enumerate(ROWS) if text and text.strip()]
    empty = len(ROWS) - len(wanted)
    assert job["metrics"]["texts"] == len(ROWS)
    assert job["metrics"]["classified"] == len(wanted)
    assert job["metrics"]["skipped_empty"] == empty == 3

    items = all_items(client, job["id"])
    assert [(item["index"], item["id"], item["text"]) for item in items] == wanted
    assert_matches_reference(items, references[family])
    counts = job["metrics"]["label_counts"]
    if family == "multitask":
        assert {task: sum(c.values()) for task, c in counts.items()} == {task: len(wanted) for task in MULTI_TASKS}
    else:
        assert sum(counts.values()) == len(wanted)

    # the CSV export parses back to exactly the stored rows, id column included
    response = client.get(f"/api/v1/jobs/{job['id']}/export?format=csv")
    assert response.status_code == 200
    reader = csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"), newline=""))
    exported = list(reader)
    if family == "multitask":
        label_columns = [c for task, labels in MULTI_TASKS.items()
                         for c in (f"{task}_label", f"{task}_score", *(f"{task}_score_{lab}" for lab in labels))]
    else:
        label_columns = ["label", "score", *(f"score_{lab}" for lab in SINGLE_TASKS["sentiment"])]
    assert reader.fieldnames == ["index", "id", "text", *label_columns]
    assert len(exported) == len(items)
    for row, item in zip(exported, items):
        assert (int(row["index"]), row["id"], row["text"]) == (item["index"], item["id"], item["text"])
        results = item["tasks"] if family == "multitask" else {None: item}
        for task, result in results.items():
            prefix = f"{task}_" if task else ""
            assert row[f"{prefix}label"] == result["label"]
            assert float(row[f"{prefix}score"]) == result["score"]
            for label, p in result["scores"].items():
                assert float(row[f"{prefix}score_{label}"]) == p

    if fmt == "jsonl":  # and the JSONL export too
        lines = client.get(f"/api/v1/jobs/{job['id']}/export?format=jsonl").get_data(as_text=True).splitlines()
        assert [(r["index"], r["id"], r["text"]) for r in map(json.loads, lines)] == wanted


def test_without_id_column_predictions_carry_no_id(client, models, references):
    dataset = upload(client, FILES["csv"](), "tweets.csv")
    job = classify(client, model_id=models["bert"], dataset_id=dataset["id"], text_column="body")
    assert job["status"] == "succeeded", job["error"]
    items = all_items(client, job["id"])
    assert all("id" not in item for item in items) and len(items) == 8
    assert_matches_reference(items, references["bert"])
    header = client.get(f"/api/v1/jobs/{job['id']}/export").get_data().decode("utf-8-sig").splitlines()[0]
    assert header.split(",")[:2] == ["index", "text"]


def _model_trained_on(models: dict, **params) -> int:
    """A copy of the tiny bert model's row whose params record how its training read the text."""
    with db.session() as session:
        source = session.get(TrainedModel, models["bert"])
        model = TrainedModel(name="tiny-templated", version=1, family="bert", encoder="tiny", tasks=source.tasks,
                             labels=source.labels, metrics={}, params={"family": "bert", **params},
                             artifact_dir=source.artifact_dir)
        session.add(model)
        session.flush()
        return model.id


def test_a_dataset_job_reads_the_text_as_the_model_was_trained(client, models, references):
    """No text_column: the model's own text column, or its text_template filled from each row (rows whose
    template cells are all empty are skipped, as in training); an explicit template works too."""
    dataset = upload(client, FILES["csv"](), "tweets.csv")
    by_column = classify(client, model_id=_model_trained_on(models, text_column="body"), dataset_id=dataset["id"])
    assert by_column["status"] == "succeeded", by_column["error"]
    assert by_column["params"]["text_column"] == "body"
    assert [i["text"] for i in all_items(client, by_column["id"])] == [t for _, t in ROWS if t and t.strip()]

    templated = _model_trained_on(models, text_template="[{body}] #{tweet_id}")
    for job in (classify(client, model_id=templated, dataset_id=dataset["id"]),
                classify(client, model_id=models["bert"], dataset_id=dataset["id"],
                         text_template="[{body}] #{tweet_id}")):
        assert job["status"] == "succeeded", job["error"]
        assert job["params"]["text_template"] == "[{body}] #{tweet_id}" and "text_column" not in job["params"]
        items = all_items(client, job["id"])
        # tweet_id is never empty, so every row has text: only rows with every template cell empty are skipped
        assert [i["text"] for i in items] == [f"[{t or ''}] #{row_id}" for row_id, t in ROWS]
        assert_matches_reference(items, references["bert"])


def test_columns_filled_from_the_model_are_checked_like_given_ones(client, models, dataset_id):
    """Filled-in columns go through the same checks before any job exists: an id column equal to the model's
    text column, a model column the dataset lacks (the message says where it came from), a template whose
    columns are all empty."""
    by_body = _model_trained_on(models, text_column="body")
    before = job_count()
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": by_body, "dataset_id": dataset_id,
                                                            "id_column": "body"}), 422, "validation_error")
    by_text = _model_trained_on(models, text_column="text")
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": by_text, "dataset_id": dataset_id}),
                         422, "unknown_column")
    assert "'text'" in error["message"] and "as the model was trained" in error["message"]
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": by_body, "dataset_id": dataset_id,
                                                            "text_template": "{notes}!"}), 422, "empty_column")
    assert job_count() == before


# ---------------------------------------------------------------- chunks and resumes


def _big_csv(n: int, empty_every: int = 9) -> tuple[bytes, list[tuple[int, str, str]]]:
    rows, wanted = [], []
    for i in range(n):
        text = "" if i % empty_every == 4 else f"row {i} " + "flight delayed again " * (i % 5)
        rows.append((f"id-{i}", text))
        if text:
            wanted.append((i, f"id-{i}", text))
    return _delimited(rows, ","), wanted


def test_dataset_larger_than_a_chunk(client, models, references, monkeypatch):
    monkeypatch.setattr(classify_job, "CLASSIFY_CHUNK", 7)
    submitted: list[int] = []
    real_submit = BatchingEngine.submit

    def recording_submit(self, texts, **kwargs):
        submitted.append(len(texts))
        return real_submit(self, texts, **kwargs)

    monkeypatch.setattr(BatchingEngine, "submit", recording_submit)
    data, wanted = _big_csv(52)
    dataset = upload(client, data, "big.csv")
    job = classify(client, model_id=models["bert"], dataset_id=dataset["id"], text_column="body",
                   id_column="tweet_id")
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0
    assert job["metrics"]["classified"] == len(wanted) and job["metrics"]["skipped_empty"] == 52 - len(wanted)
    # chunks of 7 texts (the last one shorter), each a request of its own to the engine
    assert submitted == [7] * (len(wanted) // 7) + ([len(wanted) % 7] if len(wanted) % 7 else [])
    items = all_items(client, job["id"])
    assert [(i["index"], i["id"], i["text"]) for i in items] == wanted  # every row once, in order
    assert_matches_reference(items, references["bert"])


def test_retried_job_resumes_after_the_stored_rows(client, models, references, monkeypatch):
    monkeypatch.setattr(classify_job, "CLASSIFY_CHUNK", 5)
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr("web.services.enqueue_job", lambda _app, job_id, job_type: sent.append((job_id, job_type)))
    data, wanted = _big_csv(40)
    dataset = upload(client, data, "resume.csv")
    response = client.post("/api/v1/jobs/classify", json={"model_id": models["bert"], "dataset_id": dataset["id"],
                                                          "text_column": "body", "id_column": "tweet_id"})
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    assert sent == [(job_id, "classify")]  # queued, not run

    # attempt 1 claimed the job, stored some rows (a prefix and a few scattered ones) and its worker died
    first = wanted[:6] + wanted[10:11] + wanted[20:22]
    with db.session() as session:
        claim = jobs.claim(session, job_id, "dead-worker", lease_seconds=60, max_attempts=3,
                           now=utcnow().replace(year=2000))
        assert (claim.outcome, claim.attempts) == (jobs.ClaimOutcome.CLAIMED, 1)
        insert_predictions(session, job_id, [
            {"index": i, "text": text, "label": "from-attempt-1", "score": 0.5, "scores": {"neg": 0.5, "pos": 0.5},
             "row_id": row_id} for i, row_id, text in first])
    worker.tasks.classify.apply(args=[job_id])  # the redelivered message: reclaims the stale lease and resumes
    worker.tasks.classify.apply(args=[job_id])  # a duplicate message: the job is done, nothing happens

    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["attempts"], job["progress"]) == ("succeeded", 2, 1.0), job["error"]
    rows = stored(job_id)
    assert [(r.index, r.row_id, r.text) for r in rows] == wanted  # one row per index: none twice, none missing
    earlier = {i for i, _, _ in first}
    assert all(r.label == "from-attempt-1" and r.score == 0.5 for r in rows if r.index in earlier)
    fresh = [r for r in rows if r.index not in earlier]
    assert_matches_reference([{"text": r.text, "label": r.label, "score": r.score, "scores": r.scores}
                              for r in fresh], references["bert"])
    metrics = job["metrics"]
    assert metrics["skipped_empty"] == 40 - len(wanted)
    assert metrics["label_counts"]["from-attempt-1"] == len(first)
    assert sum(metrics["label_counts"].values()) == len(wanted)


def test_retried_job_with_everything_stored_just_succeeds(client, models, monkeypatch):
    monkeypatch.setattr("web.services.enqueue_job", lambda *_args: None)
    data, wanted = _big_csv(12)
    dataset = upload(client, data, "done.csv")
    job_id = client.post("/api/v1/jobs/classify", json={"model_id": models["bert"], "dataset_id": dataset["id"],
                                                        "text_column": "body"}).get_json()["id"]
    with db.session() as session:
        jobs.claim(session, job_id, "dead-worker", lease_seconds=60, max_attempts=3, now=utcnow().replace(year=2000))
        insert_predictions(session, job_id, [{"index": i, "text": t, "label": "neg", "score": 0.6,
                                              "scores": {"neg": 0.6, "pos": 0.4}} for i, _, t in wanted])
    worker.tasks.classify.apply(args=[job_id])
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert (job["status"], job["attempts"]) == ("succeeded", 2), job["error"]
    assert job["metrics"]["skipped_empty"] == 12 - len(wanted)
    assert job["metrics"]["label_counts"] == {"neg": len(wanted)}
    assert [(r.index, r.label) for r in stored(job_id)] == [(i, "neg") for i, _, _ in wanted]


def test_the_lease_is_renewed_while_the_model_loads(client, models, settings, monkeypatch):
    """A cold model load longer than the lease must not make the job look lost (worker.lease.Lease promises renewals
    whatever the ML code is doing, building a predictor included): another worker's claim must find it busy."""
    import time

    from core import runtime
    from ml import inference

    runtime.configure(settings.replace(lease_seconds=1))  # the lease keeper beats every 0.25 s
    monkeypatch.setattr("web.services.enqueue_job", lambda *_args: None)
    dataset = upload(client, FILES["csv"](), "lease.csv")
    job_id = client.post("/api/v1/jobs/classify", json={"model_id": models["bert"], "dataset_id": dataset["id"],
                                                        "text_column": "body"}).get_json()["id"]
    outcomes = []
    real_get_predictor = inference.get_predictor

    def slow_cold_load(*args, **kwargs):
        time.sleep(1.5)  # importing torch + transformers and reading the weights, on a slow disk
        with db.session() as session:  # meanwhile the reconciler re-sent the job and another worker claims it
            outcomes.append(jobs.claim(session, job_id, "another-worker", lease_seconds=1, max_attempts=3).outcome)
        return real_get_predictor(*args, **kwargs)

    monkeypatch.setattr(inference, "get_predictor", slow_cold_load)
    worker.tasks.classify.apply(args=[job_id])
    assert outcomes == [jobs.ClaimOutcome.BUSY]


# ---------------------------------------------------------------- refused requests: 4xx and no job row


@pytest.fixture
def dataset_id(client) -> int:
    data = b"tweet_id,body,notes\nt1,hello there,\nt2,second text,   \nt3,,\n"
    return upload(client, data, "small.csv")["id"]


def _bad_bodies(models: dict, dataset_id: int):
    model_id = models["bert"]
    return [
        # the tiny model records no text column to default to
        ({"model_id": model_id, "dataset_id": dataset_id}, 422, "missing_column", None),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_template": "{body} {nope}"}, 422,
         "unknown_column", None),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_template": "{body.upper}"}, 422,
         "validation_error", "text_template"),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_template": "no fields"}, 422,
         "validation_error", "text_template"),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_template": "{body}", "text_column": "body"}, 422,
         "validation_error", "text_template"),
        ({"model_id": model_id, "texts": ["hi"], "text_template": "{body}"}, 422, "validation_error", None),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_column": "nope"}, 422, "unknown_column", None),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_column": "body", "id_column": "nope"}, 422,
         "unknown_column", None),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_column": "body", "id_column": "body"}, 422,
         "validation_error", None),
        ({"model_id": model_id, "texts": ["hi"], "dataset_id": dataset_id, "text_column": "body"}, 422,
         "validation_error", "dataset_id"),
        ({"model_id": model_id, "texts": ["hi"], "text_column": "body"}, 422, "validation_error", None),
        ({"model_id": model_id}, 422, "validation_error", "texts"),
        ({"model_id": model_id, "dataset_id": 987654, "text_column": "body"}, 404, "not_found", None),
        ({"model_id": model_id, "dataset_id": 2**63 - 1, "text_column": "body"}, 404, "not_found", None),
        ({"model_id": 987654, "dataset_id": dataset_id, "text_column": "body"}, 404, "not_found", None),
        ({"model_id": model_id, "dataset_id": 2**63, "text_column": "body"}, 422, "validation_error", "dataset_id"),
        ({"model_id": model_id, "dataset_id": 2**64 + 5, "text_column": "body"}, 422, "validation_error",
         "dataset_id"),
        ({"model_id": model_id, "dataset_id": 0, "text_column": "body"}, 422, "validation_error", "dataset_id"),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_column": "notes"}, 422, "empty_column", None),
        ({"model_id": model_id, "dataset_id": dataset_id, "text_column": ""}, 422, "validation_error",
         "text_column"),
    ]


def test_bad_classify_requests_are_refused_before_any_job_exists(client, models, dataset_id):
    for body, status, code, field in _bad_bodies(models, dataset_id):
        error = assert_error(client.post("/api/v1/jobs/classify", json=body), status, code)
        if field is not None:
            assert field in [d["field"] for d in error["details"]], (body, error)
        assert job_count() == 0, body
    # the same dataset and columns are fine
    job = classify(client, model_id=models["bert"], dataset_id=dataset_id, text_column="body", id_column="tweet_id")
    assert job["status"] == "succeeded" and job["metrics"]["skipped_empty"] == 1


@pytest.mark.parametrize(("filename", "data", "code"), [
    ("latin1.csv", "tweet_id,body\nt1,caf\xe9 au lait\n".encode("latin-1"), "invalid_encoding"),
    ("ragged.csv", b"tweet_id,body\nt1,hello\nt2,too,many,fields\n", "invalid_csv"),
    ("ragged.tsv", b"tweet_id\tbody\nt1\thello\nt2\n", "invalid_csv"),
    ("latin1.tsv", "tweet_id\tbody\nt1\tna\xefve\n".encode("latin-1"), "invalid_encoding"),
    ("array.jsonl", b'{"tweet_id": 1, "body": "ok"}\n[1, 2]\n', "invalid_jsonl"),
    ("newkey.jsonl", b'{"tweet_id": 1, "body": "ok"}\n{"tweet_id": 2, "text": "no"}\n', "invalid_jsonl"),
    ("bad.jsonl", b'{"tweet_id": 1, "body": "ok"}\n{"tweet_id": 2, "body": \n', "invalid_jsonl"),
])
def test_bad_uploads_store_nothing(client, filename, data, code):
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), filename)},
                           content_type="multipart/form-data")
    assert_error(response, 400, code)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0


# ---------------------------------------------------------------- SQL round trips per job


def _statements_while(fn) -> list[str]:
    from sqlalchemy import event

    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("texts", [1, 300])
def test_a_classify_job_costs_a_few_statements_whatever_its_size(client, models, monkeypatch, texts):
    """Claim, read the job and model, one multi-row INSERT, the job's stored-predictions count and its owner's
    (the quota's: the owner read, then one upsert of the counter), the success: not a round trip per text."""
    monkeypatch.setattr("web.services.enqueue_job", lambda *_a, **_k: None)  # run the task by hand below

    def new_job() -> str:
        body = {"model_id": models["bert"], "texts": [f"text number {i}" for i in range(texts)]}
        return client.post("/api/v1/jobs/classify", json=body).get_json()["id"]

    classify_job.run_classification(new_job())  # warm-up: loads the model into this process's cache
    job_id = new_job()
    statements = _statements_while(lambda: classify_job.run_classification(job_id))
    assert statements == ["UPDATE", "SELECT", "SELECT", "SELECT", "INSERT", "UPDATE", "SELECT", "INSERT", "UPDATE"], \
        statements
    with db.session() as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == "succeeded"
        assert session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id)) == texts
