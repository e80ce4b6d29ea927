"""HTML pages render on empty and populated databases; forms validate, re-render with messages, and use CSRF."""
from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import func, select

from core.db import db
from core.schema import Dataset, Job

from tests.factories import api_client

from . import factories as f

PAGES = ["/", "/datasets", "/train", "/classify", "/jobs", "/models", "/jobs?status=running&type=train"]


def count(table) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(table))


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of cell texts (whitespace collapsed), header rows included."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> list[list[list[str]]]:
    """The page's tables, in document order (see :class:`_Tables`)."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def job_rows(html: str, table: int = 0) -> list[list[str]]:
    """Body rows of a jobs table (``ui.jobs_table``) without the Created column: [id[:8], type, status, progress]."""
    rows = tables(html)[table]
    assert rows[0] == ["Job", "Type", "Status", "Progress", "Created"], rows[0]
    return [row[:4] for row in rows[1:]]


def stat_cards(html: str) -> dict[str, int]:
    return {name: int(value) for value, name in
            re.findall(r'<div class="stat-value">(\d+)</div><div class="stat-name">([^<]+)</div>', html)}


def empty_notes(html: str) -> list[str]:
    return [" ".join(re.sub(r"<[^>]+>", "", note).split()) for note in re.findall(r'<p class="empty">(.*?)</p>', html)]


EMPTY_PAGES = {  # path -> (heading, the empty-state notes it shows)
    "/": ("Dashboard", ["No jobs yet.", "No trained models yet.", "No datasets yet."]),
    "/datasets": ("Datasets", ["No datasets yet: upload one above."]),
    "/train": ("Train a model", ["Upload a dataset first: datasets →"]),
    "/classify": ("Classify texts", ["No trained models yet: train one →"]),
    "/jobs": ("Jobs", ["No jobs match."]),
    "/models": ("Models", ["No trained models yet: train one →"]),
    "/jobs?status=running&type=train": ("Jobs", ["No jobs match."]),
}


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_on_an_empty_database(client, path):
    response = client.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.startswith("<!doctype html>") and "bertqueue" in html
    heading, notes = EMPTY_PAGES[path]
    assert f"<h1>{heading}</h1>" in html
    assert empty_notes(html) == notes
    assert tables(html) == []  # no table of rows that do not exist
    if path == "/":
        assert stat_cards(html) == {"datasets": 0, "models": 0, "queued jobs": 0, "running jobs": 0,
                                    "succeeded jobs": 0, "failed jobs": 0, "cancelled jobs": 0}
    if path.startswith("/jobs"):
        assert '<span class="muted">0 jobs</span>' in html


@pytest.fixture
def populated():
    dataset_id = f.make_dataset()
    history = [{"epoch": 1, "loss": 0.61, "val_accuracy": 0.5}, {"epoch": 2, "loss": 0.33, "val_accuracy": 0.75}]
    metrics = {"accuracy": 0.75, "macro_f1": 0.7123, "history": history,
               "per_class": {"pos": {"precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2}}}
    model_id = f.make_model(metrics=metrics)
    multi_id = f.make_model(family="multitask", tasks={"label": ["neg", "pos"], "topic": ["film", "music"]}, name="mt",
                            metrics={"tasks": {"label": {"accuracy": 0.8}, "topic": {"accuracy": 0.6}}})
    train = f.make_train_job(dataset_id)
    f.start(train)
    f.succeed(train, metrics=metrics, model_id=model_id)
    running = f.make_train_job(dataset_id, family="bert_lstm")
    f.start(running)
    f.progress(running, 0.4)
    failed = f.make_train_job(dataset_id)
    f.fail(failed, "out of memory <script>alert(1)</script>")
    single = f.make_classify_job(model_id, ["what a great film", "dull"])
    f.start(single)
    f.add_single_task_predictions(single, ["what a great film", "dull"])
    f.succeed(single, metrics={"texts": 2, "label_counts": {"pos": 1, "neg": 1}})
    multi = f.make_classify_job(multi_id, ["tune"])
    f.start(multi)
    f.add_multitask_predictions(multi, ["tune"])
    f.succeed(multi)
    return {"dataset": dataset_id, "model": model_id, "multi_model": multi_id, "train": train, "running": running,
            "failed": failed, "single": single, "multi": multi}


def page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def test_pages_render_on_a_populated_database(client, populated):
    p = populated
    row = {  # each job's row in a jobs table: short id, type, status, progress
        "train": [p["train"][:8], "train · bert", "succeeded", "100%"],
        "running": [p["running"][:8], "train · bert_lstm", "running", "40%"],
        "failed": [p["failed"][:8], "train · bert", "failed", "0%"],
        "single": [p["single"][:8], "classify · 2 texts", "succeeded", "100%"],
        "multi": [p["multi"][:8], "classify · 1 text", "succeeded", "100%"],
    }
    newest_first = [row[k] for k in ("multi", "single", "failed", "running", "train")]

    home = page(client, "/")
    assert stat_cards(home) == {"datasets": 1, "models": 2, "queued jobs": 0, "running jobs": 1,
                                "succeeded jobs": 3, "failed jobs": 1, "cancelled jobs": 0}
    assert job_rows(home) == newest_first
    assert f'<a href="/models/{p["model"]}">sentiment v1</a> <span class="muted">bert · acc 0.75</span>' in home
    assert f'<a href="/models/{p["multi_model"]}">mt v1</a> <span class="muted">multitask</span>' in home
    assert f'<a href="/datasets/{p["dataset"]}">reviews</a> <span class="muted">4 rows</span>' in home
    assert empty_notes(home) == []

    jobs_page = page(client, "/jobs")
    assert job_rows(jobs_page) == newest_first and '<span class="muted">5 jobs</span>' in jobs_page
    filtered = page(client, "/jobs?status=running&type=train")
    assert job_rows(filtered) == [row["running"]] and '<span class="muted">1 job</span>' in filtered

    [datasets] = tables(page(client, "/datasets"))
    assert [r[:5] for r in datasets[1:]] == [["reviews", "reviews.csv", "CSV", "4", "text, label, topic"]]
    columns, first_rows, training = tables(page(client, f"/datasets/{p['dataset']}"))
    assert columns[1:] == [["text", "4", "0", "–"], ["label", "2", "0", "pos 2neg 2"],
                           ["topic", "2", "0", "film 2music 2"]]
    assert first_rows == [["text", "label", "topic"], ["great movie", "pos", "film"], ["awful plot", "neg", "film"],
                          ["lovely song", "pos", "music"], ["boring album", "neg", "music"]]
    assert [r[:4] for r in training[1:]] == [row["failed"], row["running"], row["train"]]

    [models] = tables(page(client, "/models"))
    assert [r[:6] for r in models[1:]] == [["mt", "v1", "multitask", "label, topic", "–", "–"],
                                          ["sentiment", "v1", "bert", "neg, pos", "0.75", "0.7123"]]
    single_model = page(client, f"/models/{p['model']}")
    assert '<div class="metric-value">0.75</div><div class="metric-name">accuracy</div>' in single_model
    assert tables(single_model)[:2] == [[["epoch", "loss", "val_accuracy"], ["1", "0.61", "0.5"], ["2", "0.33", "0.75"]],
                                        [["", "precision", "recall", "f1", "support"], ["pos", "1", "0.5", "0.67", "2"]]]
    assert job_rows(single_model, 2) == [row["single"]]
    multi_model = page(client, f"/models/{p['multi_model']}")
    assert tables(multi_model)[0] == [["", "accuracy"], ["label", "0.8"], ["topic", "0.6"]]
    assert job_rows(multi_model, 1) == [row["multi"]]
    assert "<dt>Task “topic”</dt>" in multi_model

    train_form_page = page(client, f"/train?dataset_id={p['dataset']}&family=multitask")
    assert f'<option selected value="{p["dataset"]}">reviews (#{p["dataset"]}, 4 rows)</option>' in train_form_page
    assert '<option selected value="multitask">' in train_form_page
    classify_page = page(client, f"/classify?model_id={p['model']}")
    assert f'<option selected value="{p["model"]}">sentiment v1 (bert, #{p["model"]})</option>' in classify_page
    assert f'<option value="{p["multi_model"]}">mt v1 (multitask, #{p["multi_model"]})</option>' in classify_page

    for key, status, attempts in (("train", "succeeded", 1), ("running", "running", 1), ("failed", "failed", 0),
                                  ("single", "succeeded", 1), ("multi", "succeeded", 1)):
        html = page(client, f"/jobs/{p[key]}")
        assert f'data-status="{status}"' in html and f"<dt>Attempts</dt><dd>{attempts}</dd>" in html, key
        assert f'<span id="job-status-badge"><span class="badge badge-{status}">{status}</span></span>' in html, key


def test_train_job_page_shows_metrics_and_model_link(client, populated):
    html = client.get(f"/jobs/{populated['train']}").get_data(as_text=True)
    assert "macro_f1" in html and "0.7123" in html and "history" in html
    assert f"/models/{populated['model']}" in html
    assert "val_accuracy" in html  # per-epoch table


def test_running_job_page_has_progress_bar_and_cancel(client, populated):
    html = client.get(f"/jobs/{populated['running']}").get_data(as_text=True)
    assert 'id="job-progress"' in html and "width: 40.0%" in html and "job.js" in html
    assert f"/jobs/{populated['running']}.json" in html
    assert "Cancel" in html


def test_failed_job_page_escapes_the_error(client, populated):
    html = client.get(f"/jobs/{populated['failed']}").get_data(as_text=True)
    assert "out of memory &lt;script&gt;" in html and "<script>alert(1)" not in html


def test_classify_job_pages_show_predictions(client, populated):
    html = client.get(f"/jobs/{populated['single']}").get_data(as_text=True)
    predictions, label_counts = tables(html)
    assert predictions == [["#", "Text", "Label", "Score"], ["0", "what a great film", "pos", "0.8"],
                           ["1", "dull", "neg", "0.7"]]
    assert label_counts == [["", "value"], ["pos", "1"], ["neg", "1"]]  # the job's metrics
    html = client.get(f"/jobs/{populated['multi']}").get_data(as_text=True)
    assert tables(html) == [[["#", "Text", "label", "topic"], ["0", "tune", "pos 0.7", "film 0.6"]]]


def test_unknown_ids_are_html_404(client):
    for path in ["/jobs/nope", "/models/99", "/datasets/99", "/nowhere"]:
        response = client.get(path)
        assert response.status_code == 404 and b"<!doctype html>" in response.data


def test_bad_jobs_filter_is_400(client):
    assert client.get("/jobs?status=bogus").status_code == 400


# ---------------------------------------------------------------- forms


def test_upload_form(client):
    data = {"file": (io.BytesIO(b"text,label\na,x\nb,y\n"), "mine.csv"), "name": ""}
    response = client.post("/datasets", data=data, content_type="multipart/form-data")
    assert response.status_code == 302
    dataset_id = int(response.headers["Location"].rsplit("/", 1)[1])
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "mine" in page and "Uploaded" in page
    assert f"/train?dataset_id={dataset_id}" in page


def test_upload_form_takes_jsonl(client):
    data = {"file": (io.BytesIO(b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'), "mine.jsonl")}
    response = client.post("/datasets", data=data, content_type="multipart/form-data")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "JSONL" in page and "2 rows" in page
    assert "CSV, TSV, JSON or JSONL" in client.get("/datasets").get_data(as_text=True)


@pytest.mark.parametrize(
    "content, message",
    [(b"\xff\xfe\x00bad", "NUL"), (b"text,label\n", "no data rows"), ("t,l\ncaf\xe9,a\n".encode("latin-1"), "UTF-8")],
)
def test_upload_form_rerenders_with_the_error(client, content, message):
    data = {"file": (io.BytesIO(content), "bad.csv")}
    response = client.post("/datasets", data=data, content_type="multipart/form-data")
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert count(Dataset) == 0


def test_upload_form_oversize_is_a_413_page(settings):
    from web import create_app

    client = api_client(create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1),
                                    "WTF_CSRF_ENABLED": False}))
    data = {"file": (io.BytesIO(b"text,label\n" + b"x" * (1024 * 1024) + b",a\n"), "big.csv")}
    response = client.post("/datasets", data=data, content_type="multipart/form-data")
    assert response.status_code == 413 and b"the limit is 1 MB" in response.data and b"<!doctype html>" in response.data
    assert count(Dataset) == 0


def test_upload_form_without_a_file(client):
    response = client.post("/datasets", data={"name": "x"}, content_type="multipart/form-data")
    assert response.status_code == 400 and "choose a CSV, TSV, JSON or JSONL file" in response.get_data(as_text=True)


def test_train_form_lists_families_and_columns(client):
    dataset_id = f.make_dataset()
    html = client.get(f"/train?dataset_id={dataset_id}").get_data(as_text=True)
    for family in ("bert", "distilbert", "bert_lstm", "multitask"):
        assert f'value="{family}"' in html
    for field in ("epochs", "batch_size", "learning_rate", "max_length", "validation_split", "lstm_hidden",
                  "bidirectional", "encoder_lr", "head_lr", "class_weights_balanced", "freeze_encoder",
                  "label_columns"):
        assert f'name="{field}"' in html, field
    assert '<option selected value="text">' in html and '<option selected value="label">' in html


def train_form(dataset, **overrides):
    data = {"dataset_id": str(dataset), "family": "bert", "text_column": "text", "label_column": "label",
            "epochs": "2", "batch_size": "8", "learning_rate": "3e-5", "max_length": "64", "validation_split": "0.2",
            "lstm_hidden": "128", "bidirectional": "y"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_train_form_creates_a_job_through_the_service(client, sent):
    dataset_id = f.make_dataset()
    response = client.post("/train", data=train_form(dataset_id, family="bert_lstm", class_weights_balanced="y",
                                                      encoder_lr="1e-5", name="my model"))
    assert response.status_code == 302, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "train")]
    with db.session() as session:
        params = session.get(Job, job_id).params
    assert params["family"] == "bert_lstm" and params["epochs"] == 2 and params["learning_rate"] == 3e-5
    assert params["class_weights"] == "balanced" and params["encoder_lr"] == 1e-5 and params["head_lr"] is None
    assert params["lstm_hidden"] == 128 and params["bidirectional"] is True and params["name"] == "my model"


def test_train_form_multitask(client, sent):
    dataset_id = f.make_dataset()
    data = train_form(dataset_id, family="multitask", label_column=None)
    data["label_columns"] = ["label", "topic"]
    response = client.post("/train", data=data)
    assert response.status_code == 302
    with db.session() as session:
        assert session.get(Job, sent[0][0]).params["label_columns"] == ["label", "topic"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"label_column": "nope"}, "not in the dataset"),
        ({"label_column": "text"}, "cannot also be a label column"),
        ({"family": "multitask"}, "multitask needs at least 2 label columns"),
        ({"family": "multitask", "label_columns": "label"}, "multitask needs at least 2 label columns"),
        ({"label_column": ""}, "choose the label column"),
        ({"epochs": "0"}, "greater than or equal to 1"),
        ({"epochs": "many"}, "Not a valid integer"),
        ({"learning_rate": "-1"}, "greater than 0"),
        ({"validation_split": "0.9"}, "less than or equal to 0.5"),
        ({"dataset_id": "999"}, "Not a valid choice"),
        ({"family": "gpt"}, "Not a valid choice"),
    ],
)
def test_train_form_errors_rerender(client, sent, overrides, message):
    dataset_id = f.make_dataset()
    response = client.post("/train", data=train_form(dataset_id, **overrides))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert count(Job) == 0 and sent == []


def test_train_form_one_class_dataset(client):
    dataset_id = f.make_dataset(b"text,label\na,x\nb,x\n")
    response = client.post("/train", data=train_form(dataset_id))
    assert response.status_code == 400 and "at least 2 classes" in response.get_data(as_text=True)


def test_classify_form(client, sent):
    model_id = f.make_model()
    response = client.post("/classify", data={"model_id": str(model_id), "texts": "first text\n\n  second text  \n"})
    assert response.status_code == 302
    with db.session() as session:
        assert session.get(Job, sent[0][0]).inputs == ["first text", "second text"]


def test_classify_form_typed_pairs_for_a_pair_model(client, sent):
    """Line k of the second box pairs with line k of the first; the page tells the script which models take
    pairs (it shows the box only for them)."""
    pair_model = f.make_model(name="nli", params={"text_pair_column": "hypothesis"})
    single = f.make_model(name="plain")
    html = client.get("/classify").get_data(as_text=True)
    assert 'name="text_pairs"' in html and f'data-pair-models="[{pair_model}]"' in html
    response = client.post("/classify", data={"model_id": str(pair_model), "texts": "a man sings\n\nit rains",
                                              "text_pairs": "someone makes music\nthe street is wet\n"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        job = session.get(Job, sent[0][0])
        assert job.inputs == [["a man sings", "someone makes music"], ["it rains", "the street is wet"]]
        assert job.params["input_kind"] == "pairs"
    # single texts to a pair model, and pairs to a single-text model: the service's clear 422s, on the form
    for model_id, data, message in [
        (pair_model, {"texts": "a"}, "was trained on sentence pairs"),
        (single, {"texts": "a", "text_pairs": "b"}, "classifies single texts"),
        (pair_model, {"texts": "a\nb", "text_pairs": "c"}, "give one second text per text: 2 text(s), 1 second"),
        (pair_model, {"texts": "", "text_pairs": "c", "dataset_id": str(f.make_dataset())},
         "second texts go with typed texts, not a dataset"),
    ]:
        response = client.post("/classify", data={"model_id": str(model_id), **data})
        assert response.status_code == 400 and message in response.get_data(as_text=True), message
    assert len(sent) == 1


@pytest.mark.parametrize("texts, message", [("", "enter at least one text"), ("\n   \n", "enter at least one text")])
def test_classify_form_errors(client, texts, message):
    model_id = f.make_model()
    response = client.post("/classify", data={"model_id": str(model_id), "texts": texts})
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert count(Job) == 0


def test_classify_form_limits(settings):
    from web import create_app

    client = api_client(create_app({"TESTING": True, "SETTINGS": settings.replace(max_texts_per_job=2),
                                    "WTF_CSRF_ENABLED": False}))
    model_id = f.make_model()
    response = client.post("/classify", data={"model_id": str(model_id), "texts": "a\nb\nc"})
    assert response.status_code == 400 and "at most 2 texts" in response.get_data(as_text=True)


def test_classify_form_unknown_model(client):
    f.make_model()
    response = client.post("/classify", data={"model_id": "77", "texts": "a"})
    assert response.status_code == 400 and "Not a valid choice" in response.get_data(as_text=True)


def test_cancel_button(client):
    job_id = f.make_train_job(f.make_dataset())
    response = client.post(f"/jobs/{job_id}/cancel", follow_redirects=True)
    assert response.status_code == 200 and "Job cancelled." in response.get_data(as_text=True)
    again = client.post(f"/jobs/{job_id}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "can no longer be cancelled" in again


# ---------------------------------------------------------------- CSRF


@pytest.fixture
def csrf_client(settings):
    from web import create_app

    return api_client(create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True}))


def token(client, path) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, "no CSRF token in the form"
    return match.group(1)


def test_form_post_without_csrf_token_is_rejected(csrf_client, sent):
    dataset_id = f.make_dataset()
    data = {"file": (io.BytesIO(b"text,label\na,x\nb,y\n"), "mine.csv")}
    assert csrf_client.post("/datasets", data=data, content_type="multipart/form-data").status_code == 400
    response = csrf_client.post("/train", data=train_form(dataset_id))
    assert response.status_code == 400 and b"CSRF" in response.data
    job_id = f.make_train_job(dataset_id)
    assert csrf_client.post(f"/jobs/{job_id}/cancel").status_code == 400
    assert csrf_client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "forged"}).status_code == 400
    with db.session() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.finished_at) == ("queued", None)  # the rejected cancel changed nothing
    assert csrf_client.post("/train", data={**train_form(dataset_id), "csrf_token": "forged"}).status_code == 400
    assert count(Dataset) == 1 and count(Job) == 1 and sent == []


def test_form_post_with_csrf_token_works(csrf_client):
    data = {"file": (io.BytesIO(b"text,label\na,x\nb,y\n"), "mine.csv"), "csrf_token": token(csrf_client, "/datasets")}
    assert csrf_client.post("/datasets", data=data, content_type="multipart/form-data").status_code == 302


def test_api_is_exempt_from_csrf(csrf_client):
    dataset_id = f.make_dataset()
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label"}
    assert csrf_client.post("/api/v1/jobs/train", json=body).status_code == 202


# ---------------------------------------------------------------- job page: downloads, label filter, id column


def rows_shown(html: str) -> list[int]:
    """Indices of the prediction rows in the job page's table, in order."""
    return [int(i) for i in re.findall(r'<tr data-index="(\d+)">', html)]


def label_options(html: str) -> list[tuple[str, str]]:
    select = html[html.index('id="label-select"'):]
    select = select[: select.index("</select>")]
    return re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select)


def seven_predictions(metrics: dict | None = None, *, finish: bool = True, model_id: int | None = None) -> str:
    texts = [f"text {i}" for i in range(7)]
    job_id = f.make_classify_job(model_id or f.make_model(), texts)
    f.start(job_id)
    f.add_single_task_predictions(job_id, texts)  # even indices pos, odd neg
    if finish:
        f.succeed(job_id, metrics=metrics)
    return job_id


def test_download_links_only_once_the_job_succeeded(client):
    model_id = f.make_model()
    queued = f.make_classify_job(model_id, ["a"])
    running = f.make_classify_job(model_id, ["a"])
    f.start(running)
    failed = f.make_classify_job(model_id, ["a"])
    f.fail(failed, "boom")
    train = f.make_train_job(f.make_dataset())
    for job_id in (queued, running, failed, train):
        html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
        assert "Download CSV" not in html and "/export" not in html, job_id
    done = seven_predictions(model_id=model_id)
    html = client.get(f"/jobs/{done}").get_data(as_text=True)
    for fmt, text in (("csv", "Download CSV"), ("jsonl", "Download JSONL")):
        href = f"/jobs/{done}/export?format={fmt}"
        assert f'id="download-{fmt}" href="{href}" download>{text}</a>' in html
        response = client.get(href)
        assert response.status_code == 200
        assert f"job-{done}-predictions.{fmt}" in response.headers["Content-Disposition"]


def test_label_filter_narrows_the_table(client):
    job_id = seven_predictions({"texts": 7, "label_counts": {"neg": 3, "pos": 4}})
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert rows_shown(html) == [0, 1, 2, 3, 4, 5, 6]
    assert label_options(html) == [("", "any"), ("neg", "neg (3)"), ("pos", "pos (4)")]
    html = client.get(f"/jobs/{job_id}?label=neg").get_data(as_text=True)
    assert rows_shown(html) == [1, 3, 5]
    assert '<option value="neg" selected>neg (3)</option>' in html and "3 labelled “neg” · 7 texts" in html
    html = client.get(f"/jobs/{job_id}?label=maybe").get_data(as_text=True)
    assert rows_shown(html) == [] and "No predictions labelled “maybe”." in html
    assert ("maybe", "maybe") in label_options(html)  # a label not predicted stays visible as the filter


def test_label_filter_keeps_across_pages(client, monkeypatch):
    monkeypatch.setattr("web.pages.jobs.PREDICTIONS_PAGE_SIZE", 2)
    job_id = seven_predictions({"label_counts": {"neg": 3, "pos": 4}})
    html = client.get(f"/jobs/{job_id}?label=pos").get_data(as_text=True)
    assert rows_shown(html) == [0, 2] and "page 1 of 2" in html
    assert f'href="/jobs/{job_id}?label=pos&amp;page=2"' in html
    html = client.get(f"/jobs/{job_id}?label=pos&page=2").get_data(as_text=True)
    assert rows_shown(html) == [4, 6] and "page 2 of 2" in html


def test_label_filter_of_a_running_job_lists_the_labels_so_far(client):
    job_id = seven_predictions(finish=False)
    html = client.get(f"/jobs/{job_id}?label=pos").get_data(as_text=True)
    assert label_options(html) == [("", "any"), ("neg", "neg"), ("pos", "pos")]
    assert rows_shown(html) == [0, 2, 4, 6]


def test_label_filter_of_a_multitask_job_uses_the_first_task(client):
    tasks = {"label": ["neg", "pos"], "topic": ["film", "music"]}
    job_id = f.make_classify_job(f.make_model(family="multitask", tasks=tasks, name="mt"), ["a", "b"])
    f.start(job_id)
    f.add_multitask_predictions(job_id, ["a", "b"])
    f.succeed(job_id, metrics={"label_counts": {"label": {"pos": 2}, "topic": {"film": 2}}})
    html = client.get(f"/jobs/{job_id}?label=pos").get_data(as_text=True)
    assert "Predicted label (label)" in html and label_options(html) == [("", "any"), ("pos", "pos (2)")]
    assert rows_shown(html) == [0, 1]


def test_id_column_shows_only_for_jobs_with_an_id_column(client):
    model_id, dataset_id = f.make_model(), f.make_dataset()
    items = [{"index": i, "text": f"t{i}", "label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9},
              "row_id": f"row-{i}"} for i in range(2)]
    with_id = f.finished(f.make_dataset_classify_job(model_id, dataset_id, id_column="topic"), items)
    html = client.get(f"/jobs/{with_id}").get_data(as_text=True)
    assert "<th>#</th><th>topic</th><th>Text</th>" in html
    assert '<td class="mono">row-0</td>' in html and '<td class="mono">row-1</td>' in html
    plain = f.finished(f.make_dataset_classify_job(model_id, dataset_id), [dict(items[0], row_id=None)])
    assert "<th>#</th><th>Text</th>" in client.get(f"/jobs/{plain}").get_data(as_text=True)


# ---------------------------------------------------------------- classify form: a dataset instead of texts


def classify_form(model_id, dataset_id="", **overrides):
    data = {"model_id": str(model_id), "texts": "", "dataset_id": str(dataset_id), "text_column": "text",
            "id_column": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_classify_form_lists_datasets_and_their_columns(client):
    f.make_model()
    dataset_id = f.make_dataset()
    html = client.get("/classify").get_data(as_text=True)
    assert f'<option value="{dataset_id}">reviews (#{dataset_id}, 4 rows)</option>' in html
    assert 'name="text_column"' in html and 'name="id_column"' in html and "classify.js" in html
    html = client.get(f"/classify?dataset_id={dataset_id}").get_data(as_text=True)
    assert f'<option selected value="{dataset_id}">' in html and '<option value="text">text</option>' in html
    assert '<option value="topic">topic</option>' in html
    assert '<option value="">— as the model was trained —</option>' in html


def test_classify_form_reads_the_text_as_the_model_was_trained(client, sent):
    """The text column left at "as the model was trained": the job reads the model's text_template."""
    model_id = f.make_model(params={"text_template": "{topic}: {text}"})
    dataset_id = f.make_dataset()
    response = client.post("/classify", data=classify_form(model_id, dataset_id, text_column=""))
    assert response.status_code == 302, response.get_data(as_text=True)
    with db.session() as session:
        params = session.get(Job, response.headers["Location"].rsplit("/", 1)[1]).params
    assert params["text_template"] == "{topic}: {text}" and "text_column" not in params


@pytest.mark.parametrize("id_column", ["topic", ""])
def test_classify_form_with_a_dataset_creates_a_job(client, sent, id_column):
    model_id, dataset_id = f.make_model(), f.make_dataset()
    response = client.post("/classify", data=classify_form(model_id, dataset_id, id_column=id_column))
    assert response.status_code == 302, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    assert sent == [(job_id, "classify")]
    with db.session() as session:
        job = session.get(Job, job_id)
        params, inputs = job.params, job.inputs
        assert job.type == "classify" and job.dataset_id == dataset_id and job.model_id == model_id
    expected = {"model_id": model_id, "dataset_id": dataset_id, "text_column": "text", "text_count": 4}
    if id_column:
        expected["id_column"] = id_column
    assert params == expected and inputs is None
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Classification job queued for 4 row(s) of dataset reviews." in page


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"texts": "typed\ntexts"}, "Type texts or choose a dataset, not both."),
        ({"dataset_id": "", "texts": "  \n"}, "enter at least one text, or choose a dataset"),
        # "as the model was trained": this model records no text column
        ({"text_column": ""}, "does not record the column it was trained on"),
        ({"text_column": "nope"}, "column(s) &#39;nope&#39; not in dataset"),
        ({"id_column": "text"}, "id_column must differ from text_column"),
        ({"dataset_id": "999"}, "Not a valid choice"),
        ({"dataset_id": "abc"}, "Invalid Choice: could not coerce"),
    ],
)
def test_classify_form_dataset_errors_rerender(client, sent, overrides, message):
    model_id, dataset_id = f.make_model(), f.make_dataset()
    response = client.post("/classify", data={**classify_form(model_id, dataset_id), **overrides})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert count(Job) == 0 and sent == []


def test_classify_form_with_a_dataset_needs_the_csrf_token(csrf_client, sent):
    model_id, dataset_id = f.make_model(), f.make_dataset()
    assert csrf_client.post("/classify", data=classify_form(model_id, dataset_id)).status_code == 400
    assert count(Job) == 0
    data = {**classify_form(model_id, dataset_id), "csrf_token": token(csrf_client, "/classify")}
    assert csrf_client.post("/classify", data=data).status_code == 302 and len(sent) == 1
