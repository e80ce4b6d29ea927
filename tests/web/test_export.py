"""GET /api/v1/jobs/<id>/export: every prediction as CSV or JSONL, exactly as stored, streamed page by page."""
from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import event

from core.db import db
from core.results import insert_predictions
from core.schema import TrainedModel

from . import factories as f
from .helpers import assert_error

ODD_TEXTS = [
    'she said "hi", then left',
    "a,b,,c",
    "two\nlines",
    "bare\rcarriage return",
    "windows\r\nline end",
    "emoji 😀🎉 and ünïcödé",
    "=SUM(A1:A2)",
    "@mention +1 -2",
    "  leading and trailing spaces  ",
    'tab\there "quoted, with comma"\n',
]
# floats whose shortest repr has many digits: a lossy writer would not give them back exactly
ODD_FLOATS = [0.1 + 0.2, 1 / 3, 1e-17, 0.9999999999999999, 2 / 3, 0.5]


def single_items(texts, labels=("neg", "pos"), row_ids=None) -> list[dict]:
    items = []
    for i, text in enumerate(texts):
        p = ODD_FLOATS[i % len(ODD_FLOATS)]
        scores = {labels[0]: 1 - p, labels[1]: p}
        label = max(scores, key=scores.get)
        item = {"index": i, "text": text, "label": label, "score": scores[label], "scores": scores}
        if row_ids is not None:
            item["row_id"] = row_ids[i]
        items.append(item)
    return items


TASKS = {"sentiment": ["neg", "pos"], "topic": ["film", "music", "other"]}


def multitask_items(texts, row_ids=None) -> list[dict]:
    items = []
    for i, text in enumerate(texts):
        p, q = ODD_FLOATS[i % len(ODD_FLOATS)], ODD_FLOATS[(i + 1) % len(ODD_FLOATS)]
        sentiment = {"label": "pos" if p > 0.5 else "neg", "score": max(p, 1 - p), "scores": {"neg": 1 - p, "pos": p}}
        topic_scores = {"film": q / 2, "music": q / 2, "other": 1 - q}
        topic = {"label": max(topic_scores, key=topic_scores.get), "score": max(topic_scores.values()),
                 "scores": topic_scores}
        item = {"index": i, "text": text, "label": sentiment["label"], "score": sentiment["score"],
                "scores": sentiment["scores"], "tasks": {"sentiment": sentiment, "topic": topic}}
        if row_ids is not None:
            item["row_id"] = row_ids[i]
        items.append(item)
    return items


def expected_single(items, labels, with_id=False) -> list[dict]:
    rows = []
    for item in items:
        row = {"index": item["index"], **({"id": item.get("row_id")} if with_id else {}), "text": item["text"],
               "label": item["label"], "score": item["score"]}
        row.update((f"score_{label}", item["scores"][label]) for label in labels)
        rows.append(row)
    return rows


def expected_multitask(items, with_id=False) -> list[dict]:
    rows = []
    for item in items:
        row = {"index": item["index"], **({"id": item.get("row_id")} if with_id else {}), "text": item["text"]}
        for task, labels in TASKS.items():
            result = item["tasks"][task]
            row[f"{task}_label"], row[f"{task}_score"] = result["label"], result["score"]
            row.update((f"{task}_score_{label}", result["scores"][label]) for label in labels)
        rows.append(row)
    return rows


def as_csv_strings(rows: list[dict]) -> list[dict]:
    """What the CSV should hold: ints as digits, floats as repr, None as an empty cell."""
    return [{k: "" if v is None else repr(v) if isinstance(v, float) else str(v) for k, v in row.items()}
            for row in rows]


def parse_csv(response) -> tuple[list[str], list[dict]]:
    assert response.data.startswith(b"\xef\xbb\xbf"), "no UTF-8 BOM"
    text = response.data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, record, strict=True)) for record in reader]


def parse_jsonl(response) -> list[dict]:
    text = response.data.decode("utf-8")
    assert text.endswith("\n")
    # split on "\n" only: str.splitlines would also split inside texts at U+2028 and friends
    return [json.loads(line) for line in text[:-1].split("\n")] if text else []


def export(client, job_id, fmt=None):
    suffix = f"?format={fmt}" if fmt else ""
    return client.get(f"/api/v1/jobs/{job_id}/export{suffix}")


# ---------------------------------------------------------------- single-task


@pytest.fixture
def single_job():
    model_id = f.make_model(tasks={"label": ["neg", "pos"]})
    items = single_items(ODD_TEXTS)
    job_id = f.finished(f.make_classify_job(model_id, ODD_TEXTS), items)
    return job_id, items


def test_csv_round_trips_exactly(client, single_job):
    job_id, items = single_job
    response = export(client, job_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == f'attachment; filename="job-{job_id}-predictions.csv"'
    header, rows = parse_csv(response)
    assert header == ["index", "text", "label", "score", "score_neg", "score_pos"]
    assert rows == as_csv_strings(expected_single(items, ["neg", "pos"]))
    assert [float(r["score_pos"]) for r in rows] == [item["scores"]["pos"] for item in items]


def test_csv_is_rfc4180(client, single_job):
    job_id, _ = single_job
    body = export(client, job_id, "csv").data.decode("utf-8-sig")
    assert body.startswith("index,text,label,score,score_neg,score_pos\r\n") and body.endswith("\r\n")
    assert '\r\n1,"a,b,,c",' in body  # minimal quoting: commas force quotes
    assert '"she said ""hi"", then left"' in body  # quotes doubled
    assert '"bare\rcarriage return"' in body  # a bare CR is quoted, not turned into a row break
    assert "\r\n7,@mention +1 -2," in body  # nothing to quote, nothing added: the text is exported exactly


def test_jsonl_round_trips_exactly(client, single_job):
    job_id, items = single_job
    response = export(client, job_id, "jsonl")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.headers["Content-Disposition"] == f'attachment; filename="job-{job_id}-predictions.jsonl"'
    rows = parse_jsonl(response)
    assert rows == expected_single(items, ["neg", "pos"])
    assert [list(r) for r in rows[:1]] == [["index", "text", "label", "score", "score_neg", "score_pos"]]
    assert "😀" in response.data.decode("utf-8")  # ensure_ascii=False: UTF-8, not \\u escapes


def test_score_columns_follow_the_models_label_order(client):
    model_id = f.make_model(tasks={"label": ["pos", "neg"]})  # the scores dicts say neg first
    items = single_items(["x", "y"])
    job_id = f.finished(f.make_classify_job(model_id, ["x", "y"]), items)
    header, rows = parse_csv(export(client, job_id))
    assert header == ["index", "text", "label", "score", "score_pos", "score_neg"]
    assert rows == as_csv_strings(expected_single(items, ["pos", "neg"]))


def test_labels_come_from_the_first_prediction_when_the_model_is_gone(client):
    model_id = f.make_model(tasks={"label": ["neg", "pos"]})
    items = single_items(["x", "y"])
    job_id = f.finished(f.make_classify_job(model_id, ["x", "y"]), items)
    with db.session() as session:
        session.delete(session.get(TrainedModel, model_id))
    assert parse_jsonl(export(client, job_id, "jsonl")) == expected_single(items, ["neg", "pos"])


def test_a_job_without_predictions_exports_only_the_header(client):
    job_id = f.finished(f.make_classify_job(f.make_model(), ["x"]), [])
    assert export(client, job_id).data.decode("utf-8-sig") == "index,text,label,score,score_neg,score_pos\r\n"
    assert export(client, job_id, "jsonl").data == b""


# ---------------------------------------------------------------- id column


def test_id_column_only_when_the_job_has_an_id_column(client):
    model_id, dataset_id = f.make_model(), f.make_dataset()
    texts = ODD_TEXTS[:4]
    row_ids = ["r-1", "=2", "id, with comma", None]  # a row without an id exports an empty cell / null
    items = single_items(texts, row_ids=row_ids)
    job_id = f.finished(f.make_dataset_classify_job(model_id, dataset_id, id_column="text_id"), items)
    header, rows = parse_csv(export(client, job_id))
    assert header == ["index", "id", "text", "label", "score", "score_neg", "score_pos"]
    assert rows == as_csv_strings(expected_single(items, ["neg", "pos"], with_id=True))
    assert [r["id"] for r in parse_jsonl(export(client, job_id, "jsonl"))] == row_ids

    plain = f.finished(f.make_dataset_classify_job(model_id, dataset_id), single_items(texts))
    assert parse_csv(export(client, plain))[0] == ["index", "text", "label", "score", "score_neg", "score_pos"]
    assert "id" not in parse_jsonl(export(client, plain, "jsonl"))[0]


# ---------------------------------------------------------------- multitask


@pytest.fixture
def multitask_job():
    model_id = f.make_model(family="multitask", tasks=TASKS, name="mt")
    row_ids = [f"row-{i}" for i in range(len(ODD_TEXTS))]
    items = multitask_items(ODD_TEXTS, row_ids=row_ids)
    job_id = f.finished(f.make_dataset_classify_job(model_id, f.make_dataset(), id_column="rid"), items)
    return job_id, items


MULTITASK_HEADER = ["index", "id", "text", "sentiment_label", "sentiment_score", "sentiment_score_neg",
                    "sentiment_score_pos", "topic_label", "topic_score", "topic_score_film", "topic_score_music",
                    "topic_score_other"]


def test_multitask_csv_round_trips_exactly(client, multitask_job):
    job_id, items = multitask_job
    header, rows = parse_csv(export(client, job_id, "csv"))
    assert header == MULTITASK_HEADER
    assert rows == as_csv_strings(expected_multitask(items, with_id=True))


def test_multitask_jsonl_round_trips_exactly(client, multitask_job):
    job_id, items = multitask_job
    rows = parse_jsonl(export(client, job_id, "jsonl"))
    assert rows == expected_multitask(items, with_id=True)
    assert list(rows[0]) == MULTITASK_HEADER


# ---------------------------------------------------------------- paging


def test_a_large_export_is_complete_in_order_and_read_in_pages(client):
    model_id = f.make_model()
    n = 5000
    job_id = f.make_classify_job(model_id, ["x"])
    f.start(job_id)
    for start in range(0, n, 1000):  # written in reverse chunks: the export must order by index itself
        chunk = list(range(n - start - 1000, n - start))
        with db.session() as session:
            insert_predictions(session, job_id, [
                {"index": i, "text": f"text {i}", "label": "pos", "score": 0.75, "scores": {"neg": 0.25, "pos": 0.75}}
                for i in chunk
            ])
    f.succeed(job_id)

    page_queries = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM predictions" in statement and "predictions.row_id" in statement:
            page_queries.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        csv_rows = parse_csv(export(client, job_id))[1]
        jsonl_rows = parse_jsonl(export(client, job_id, "jsonl"))
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert [int(r["index"]) for r in csv_rows] == list(range(n))
    assert [r["text"] for r in csv_rows] == [f"text {i}" for i in range(n)]
    assert [r["index"] for r in jsonl_rows] == list(range(n))
    # 1,000 rows per query: 5 full pages and one that comes back empty, per export; keyset, not OFFSET
    assert len(page_queries) == 12
    assert all("LIMIT" in q for q in page_queries)
    # every page after the first starts after the last index seen (SQLite writes "OFFSET ?" with 0 regardless)
    assert sum('predictions."index" >' in q for q in page_queries) == 10


def test_the_export_is_streamed(client, single_job):
    job_id, _ = single_job
    response = client.get(f"/api/v1/jobs/{job_id}/export", buffered=False)
    assert response.is_streamed and "Content-Length" not in response.headers
    assert b"".join(response.response).startswith(b"\xef\xbb\xbfindex,")
    response.close()


# ---------------------------------------------------------------- errors


def test_unknown_job_is_404(client):
    assert_error(export(client, "nope"), 404, "not_found")


def test_train_job_is_409(client):
    job_id = f.make_train_job(f.make_dataset())
    assert_error(export(client, job_id), 409, "not_a_classify_job")


@pytest.mark.parametrize("status", ["queued", "running", "failed"])
def test_unfinished_job_is_409(client, status):
    job_id = f.make_classify_job(f.make_model(), ["x"])
    if status != "queued":
        f.start(job_id)
    if status == "failed":
        f.fail(job_id, "boom")
    error = assert_error(export(client, job_id, "jsonl"), 409, "job_not_succeeded")
    assert f"is {status}" in error["message"]


@pytest.mark.parametrize("fmt", ["xlsx", "CSV", "json"])
def test_bad_format_is_400(client, single_job, fmt):
    error = assert_error(export(client, single_job[0], fmt), 400, "invalid_parameter")
    assert "csv, jsonl" in error["message"]


def test_token_jobs_export_jsonl_csv_per_entity_and_conll(client, single_job):
    """A token-classification job: JSONL one object per text with its entities, CSV one line per entity, CoNLL
    token<TAB>tag lines; format=conll on a text-classification job is a 400 before anything is streamed."""
    from core import task_types

    kind = task_types.get("token-classification")
    model_id = f.make_model(tasks={"tags": ["O", "B-person", "I-person"]},
                            params={"task_type": "token-classification"})
    texts = ["Bob Smith met me", "nobody here"]
    results = [{"entities": [{"entity_group": "person", "score": 0.9, "word": "Bob Smith", "start": 0, "end": 9}]},
               {"entities": []}]
    items = [{"index": i, "text": t, **kind.prediction_columns(r)} for i, (t, r) in enumerate(zip(texts, results))]
    job_id = f.finished(f.make_classify_job(model_id, texts), items)
    assert parse_jsonl(export(client, job_id, "jsonl")) == [
        {"index": i, "text": t, "entities": r["entities"]} for i, (t, r) in enumerate(zip(texts, results))]
    header, rows = parse_csv(export(client, job_id, "csv"))
    assert header == ["index", "id", "entity_group", "start", "end", "word", "score"]
    assert rows == [{"index": "0", "id": "", "entity_group": "person", "start": "0", "end": "9", "word": "Bob Smith",
                     "score": "0.9"}]
    conll = export(client, job_id, "conll")
    assert conll.status_code == 200 and conll.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert conll.get_data(as_text=True) == "Bob\tB-person\nSmith\tI-person\nmet\tO\nme\tO\n\nnobody\tO\nhere\tO\n\n"
    assert client.get(f"/api/v1/jobs/{job_id}/predictions?label=person").get_json()["total"] == 1
    text_job, _ = single_job
    assert_error(export(client, text_job, "conll"), 400, "invalid_parameter")
