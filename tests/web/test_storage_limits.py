"""Issue 16: one user must not exhaust the web or the disk through datasets and storage.

Training requests are refused before any dataset row is read when a quota is spent, and check labels in one
streaming pass; uploads are capped in rows, columns and header names while they are scanned; lists carry at most
LIST_COLUMNS columns per dataset; per-user storage quotas (datasets, models, predictions) refuse with 413/429
``quota_exceeded`` and the numbers, and the account (API and page) shows the usage.
"""
from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from core import datasets as core_datasets
from core.db import db
from core.schema import TrainedModel
from tests.factories import api_client, make_user
from web import create_app
from web.serializers import LIST_COLUMNS

from . import factories as f
from .helpers import assert_error

TRAIN = {"text_column": "text", "label_column": "label"}


@pytest.fixture
def alice(app):
    return make_user("alice")


def _client(settings, user, **changes):
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(**changes), "WTF_CSRF_ENABLED": False})
    return api_client(app, user)


def _upload(client, data: bytes, filename: str = "d.csv"):
    return client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def _short_rows(count: int) -> bytes:
    return b"text,label\n" + b"".join(b"t%d,%s\n" % (i % 10, b"ab"[i % 2:i % 2 + 1]) for i in range(count))


# ---------------------------------------------------------------- item 1: training requests


def test_training_over_the_active_jobs_quota_reads_no_row(settings, alice, monkeypatch):
    client = _client(settings, alice, max_active_jobs_per_user=1)
    dataset = f.make_dataset(owner_id=alice.id)
    f.make_train_job(dataset, owner_id=alice.id)
    read = []
    original = core_datasets.RowStream.__iter__
    monkeypatch.setattr(core_datasets.RowStream, "__iter__", lambda self: read.append(1) or original(self))
    assert_error(client.post("/api/v1/jobs/train", json={"dataset_id": dataset, **TRAIN}), 429,
                 "too_many_active_jobs")
    assert read == []  # refused before the dataset's rows were parsed (the content is never loaded either)


def test_training_request_checks_labels_in_bounded_memory(settings, alice):
    client = _client(settings, alice)
    dataset = f.make_dataset(_short_rows(200_000), owner_id=alice.id)  # 1.4 MB of 6-byte rows
    tracemalloc.start()
    try:
        response = client.post("/api/v1/jobs/train", json={"dataset_id": dataset, **TRAIN})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 202, response.json
    # every row as a dict took ~60 MB here; streaming holds the content plus a few buffers
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MB"


def test_training_refuses_a_label_column_of_free_text_while_streaming(settings, alice, monkeypatch):
    monkeypatch.setattr(core_datasets, "MAX_TRAINING_LABELS", 100)
    client = _client(settings, alice)
    rows = b"text,label\n" + b"".join(b"t,l%d\n" % i for i in range(500))
    dataset = f.make_dataset(rows, owner_id=alice.id)
    error = assert_error(client.post("/api/v1/jobs/train", json={"dataset_id": dataset, **TRAIN}), 422,
                         "too_many_labels")
    assert "more than 100 distinct labels" in error["message"]


def test_rows_per_dataset_are_capped(settings, alice):
    client = _client(settings, alice, max_dataset_rows=10)
    assert _upload(client, _short_rows(10)).status_code == 201
    error = assert_error(_upload(client, _short_rows(11)), 413, "too_many_rows")
    assert "at most 10" in error["message"]


# ---------------------------------------------------------------- item 4: wide uploads


def test_columns_per_dataset_are_capped_at_the_header(settings, alice, monkeypatch):
    client = _client(settings, alice, max_dataset_columns=1000)
    profiled = []
    monkeypatch.setattr(core_datasets.Profiler, "__init__",
                        lambda self, columns, _init=core_datasets.Profiler.__init__: profiled.append(1) or _init(
                            self, columns))
    header = ",".join(f"c{i}" for i in range(1001)).encode()
    error = assert_error(_upload(client, header + b"\n" + b",".join([b"x"] * 1001) + b"\n"), 413,
                         "too_many_columns")
    assert "1,001" in error["message"] and "at most 1,000" in error["message"]
    line = json.dumps({f"c{i}": "x" for i in range(1001)}).encode()
    assert_error(_upload(client, line + b"\n", "d.jsonl"), 413, "too_many_columns")
    assert profiled == []  # refused at the header: no row was profiled
    ok = ",".join(f"c{i}" for i in range(1000)).encode()
    assert _upload(client, ok + b"\n" + b",".join([b"x"] * 1000) + b"\n").status_code == 201


@pytest.mark.parametrize("data,filename", [
    (b"text," + b"x" * 201 + b"\na,b\n", "d.csv"),
    (b'{"text": "a", "bad\\u0000name": "b"}\n', "d.jsonl"),
])
def test_header_names_a_request_could_never_use_are_refused(settings, alice, data, filename):
    client = _client(settings, alice)
    error = assert_error(_upload(client, data, filename), 400, "invalid_column_name")
    assert "column name" in error["message"]


def test_lists_carry_at_most_list_columns_per_dataset(settings, alice):
    client = _client(settings, alice)
    columns = ["text", "label", *(f"extra{i}" for i in range(LIST_COLUMNS + 10))]
    wide = f.make_dataset((",".join(columns) + "\n" + ",".join(["x"] * len(columns)) + "\n").encode(),
                          owner_id=alice.id)
    narrow = f.make_dataset(owner_id=alice.id)
    items = {d["id"]: d for d in client.get("/api/v1/datasets").json["items"]}
    assert items[wide]["columns"] == columns[:LIST_COLUMNS]
    assert (items[wide]["column_count"], items[wide]["columns_truncated"]) == (len(columns), True)
    assert items[narrow]["columns"] == ["text", "label", "topic"] and not items[narrow]["columns_truncated"]
    assert client.get(f"/api/v1/datasets/{wide}").json["columns"] == columns
    # the train page offers the chosen dataset's columns, all of them
    page = client.get(f"/train?dataset_id={wide}").get_data(as_text=True)
    assert f'<option value="{columns[-1]}"' in page


# ---------------------------------------------------------------- item 3: storage quotas


def test_dataset_quotas_count_and_bytes(settings, alice):
    client = _client(settings, alice, max_datasets_per_user=2, max_dataset_mb_per_user=1)
    assert _upload(client, f.CSV).status_code == 201
    big = _short_rows(220_000)  # about 1.1 MB: with the first upload, past the 1 MB quota
    error = assert_error(_upload(client, big), 413, "quota_exceeded")
    assert error["quota"] == "dataset_bytes" and error["limit"] == 2**20
    assert error["usage"] == len(f.CSV) and error["requested"] == len(big)
    assert _upload(client, f.CSV).status_code == 201
    error = assert_error(_upload(client, f.CSV), 429, "quota_exceeded")
    assert (error["quota"], error["usage"], error["limit"]) == ("datasets", 2, 2)
    assert "2 datasets of at most 2" in error["message"]
    # another user's quota is their own; admins are exempt (QUOTA_EXEMPT_ADMINS)
    assert _client(settings, make_user("bob"), max_datasets_per_user=2).post(
        "/api/v1/datasets", data={"file": (io.BytesIO(f.CSV), "d.csv")}).status_code == 201
    root = _client(settings, make_user("root", is_admin=True), max_datasets_per_user=1)
    for _ in range(2):
        assert _upload(root, f.CSV).status_code == 201
    root = _client(settings, make_user("root2", is_admin=True), max_datasets_per_user=1, quota_exempt_admins=False)
    assert _upload(root, f.CSV).status_code == 201
    assert_error(_upload(root, f.CSV), 429, "quota_exceeded")


def test_model_quotas_refuse_training_and_deleting_frees_them(settings, alice):
    client = _client(settings, alice, max_models_per_user=2, max_model_mb_per_user=1)
    dataset = f.make_dataset(owner_id=alice.id)
    model = f.make_model(owner_id=alice.id)
    body = {"dataset_id": dataset, **TRAIN}
    assert client.post("/api/v1/jobs/train", json=body).status_code == 202  # 1 model + 1 training in progress
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 429, "quota_exceeded")
    assert (error["quota"], error["usage"], error["limit"], error["requested"]) == ("models", 2, 2, 1)
    assert client.delete(f"/api/v1/models/{model}").status_code == 200
    assert client.post("/api/v1/jobs/train", json=body).status_code == 202
    # bytes: a model whose files reach the quota refuses further trainings until deleted
    with db.session() as session:
        for row in session.query(TrainedModel):
            row.deleted_at = None
            row.size_bytes = 2**20
    error = assert_error(_client(settings, alice, max_model_mb_per_user=1).post("/api/v1/jobs/train", json=body),
                         413, "quota_exceeded")
    assert (error["quota"], error["usage"], error["limit"]) == ("model_bytes", 2**20, 2**20)


def test_prediction_quota_counts_stored_and_pending(settings, alice):
    client = _client(settings, alice, max_predictions_per_user=5)
    model = f.make_model(owner_id=alice.id)
    done = f.make_classify_job(model, ["a", "b"], owner_id=alice.id)
    f.finished(done, [{"index": i, "text": t, "label": "pos", "score": 1.0, "scores": {"pos": 1.0}}
                      for i, t in enumerate("ab")])
    assert client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x", "y"]}).status_code == 202
    error = assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x", "y"]}), 429,
                         "quota_exceeded")
    assert (error["quota"], error["usage"], error["limit"], error["requested"]) == ("predictions", 4, 5, 2)
    assert client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["z"]}).status_code == 202


def test_account_shows_usage_against_the_limits(settings, alice):
    client = _client(settings, alice, max_datasets_per_user=7)
    assert _upload(client, f.CSV).status_code == 201
    account = client.get("/api/v1/account").json
    assert (account["username"], account["exempt"]) == ("alice", False)
    assert account["usage"]["datasets"] == 1 and account["usage"]["dataset_bytes"] == len(f.CSV)
    assert account["limits"]["datasets"] == 7 and account["limits"]["dataset_bytes"] == 2048 * 2**20
    page = client.get("/account").get_data(as_text=True)
    assert 'id="storage-table"' in page and "<td>1</td>" in page and "<td>7</td>" in page


@pytest.mark.postgres
def test_quotas_on_postgresql(settings, postgres_schema_url, sent):
    """The same quotas on a migrated PostgreSQL schema (the user row locked, SUMs over BIGINT, the join)."""
    from tests.factories import migrate

    migrate(postgres_schema_url)
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(
        database_url=postgres_schema_url, max_datasets_per_user=1, max_predictions_per_user=2, max_models_per_user=1)})
    alice = make_user("alice")  # in the database the app configured
    client = api_client(app, alice)
    assert _upload(client, f.CSV).status_code == 201
    error = assert_error(_upload(client, f.CSV), 429, "quota_exceeded")
    assert (error["quota"], error["usage"]) == ("datasets", 1)
    model = f.make_model(owner_id=alice.id)
    assert client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["a", "b"]}).status_code == 202
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["c"]}), 429,
                 "quota_exceeded")
    dataset = client.get("/api/v1/datasets").json["items"][0]["id"]
    assert_error(client.post("/api/v1/jobs/train", json={"dataset_id": dataset, **TRAIN}), 429, "quota_exceeded")
    usage = client.get("/api/v1/account").json["usage"]
    assert usage == {"datasets": 1, "dataset_bytes": len(f.CSV), "models": 1, "model_bytes": 0, "predictions": 2}
