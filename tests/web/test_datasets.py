"""Dataset upload: good files are stored, bad ones get a clear 4xx and leave no row."""
from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from core.db import db
from core.schema import Dataset
from web import schemas

from .helpers import assert_error

GOOD = b"text,label\nI loved it,pos\nterrible,neg\nfine film,pos\n"


def upload(client, content: bytes, filename: str = "data.csv", **fields):
    return client.post(
        "/api/v1/datasets",
        data={"file": (io.BytesIO(content), filename), **fields},
        content_type="multipart/form-data",
    )


def dataset_count() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Dataset))


def test_upload_good_csv(client):
    response = upload(client, GOOD, "reviews.csv", name="My reviews")
    assert response.status_code == 201, response.json
    body = response.json
    schemas.Dataset.model_validate(body)
    assert body["name"] == "My reviews"
    assert body["rows"] == 3 and body["columns"] == ["text", "label"]
    assert body["filename"] == "reviews.csv"
    assert body["created_at"].endswith("+00:00")
    assert response.headers["Location"] == f"/api/v1/datasets/{body['id']}"
    assert body["column_stats"]["label"]["top_values"] == [["pos", 2], ["neg", 1]]
    with db.session() as session:
        assert session.get(Dataset, body["id"]).content == GOOD


def test_name_defaults_to_file_stem_and_path_is_stripped(client):
    body = upload(client, GOOD, "../../home/me/tweets.csv").json
    assert body["name"] == "tweets" and body["filename"] == "tweets.csv"


def test_bom_and_semicolons(client):
    body = upload(client, "\ufefftext;label\ncafé;a\nthé;b\n".encode("utf-8")).json
    assert body["columns"] == ["text", "label"] and body["rows"] == 2
    assert body["preview"][0] == {"text": "café", "label": "a"}


def test_quoted_fields_with_newlines_and_commas(client):
    body = upload(client, b'text,label\n"hello, world",a\n"two\nlines",b\n').json
    assert body["rows"] == 2


@pytest.mark.parametrize(
    "content, code, fragment",
    [
        ("text,label\ncaf\xe9,a\n".encode("latin-1"), "invalid_encoding", "UTF-8"),
        (b'text,label\n"unterminated,a\nx,b\n', "invalid_csv", "malformed"),
        (b"text,label\na,b,c\n", "invalid_csv", "3 fields"),
        (b"text,label\nonly-one-field\n", "invalid_csv", "1 fields"),
        (b"", "empty_file", "empty"),
        (b"   \n\n", "empty_file", "empty"),
        (b"text,label\n", "empty_file", "no data rows"),
        (b"text,text\na,b\n", "invalid_csv", "duplicate"),
        (b"text,\na,b\n", "invalid_csv", "needs a name"),
        (b"a\x00b,c\n1,2\n", "invalid_csv", "NUL"),
    ],
)
def test_bad_files_are_400_and_store_nothing(client, content, code, fragment):
    error = assert_error(upload(client, content), 400, code)
    assert fragment in error["message"]
    assert dataset_count() == 0


def test_missing_file_field_is_400(client):
    response = client.post("/api/v1/datasets", data={"name": "x"}, content_type="multipart/form-data")
    assert "file" in assert_error(response, 400, "missing_file")["message"]
    assert_error(client.post("/api/v1/datasets", json={"file": "text,label"}), 400, "missing_file")


def test_oversize_upload_is_413_json(settings):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1)})
    content = b"text,label\n" + b"x" * (1024 * 1024 + 10) + b",a\n"
    error = assert_error(upload(app.test_client(), content), 413, "payload_too_large")
    assert "1 MB" in error["message"]
    assert dataset_count() == 0


def test_too_long_name_is_422(client):
    assert_error(upload(client, GOOD, name="n" * 201), 422)
    assert dataset_count() == 0


def test_list_and_get(client):
    first = upload(client, GOOD, "a.csv").json["id"]
    second = upload(client, b"t,l\nx,1\ny,2\n", "b.csv").json["id"]
    listing = client.get("/api/v1/datasets").json
    schemas.DatasetList.model_validate(listing)
    assert listing["total"] == 2 and [d["id"] for d in listing["items"]] == [second, first]
    assert "content" not in listing["items"][0]
    assert client.get("/api/v1/datasets?limit=1&offset=1").json["items"][0]["id"] == first
    detail = client.get(f"/api/v1/datasets/{first}").json
    schemas.Dataset.model_validate(detail)
    assert detail["preview"][0] == {"text": "I loved it", "label": "pos"}
    assert detail["column_stats"]["text"]["label_like"] is False
