"""Dataset upload: good files are stored, bad ones get a clear 4xx and leave no row."""
from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from core.accounts import Principal
from core.db import db
from core.schema import Dataset
from tests.factories import api_client, make_user
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
    assert body["rows"] == 3 and body["columns"] == ["text", "label"] and body["format"] == "csv"
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
    assert_error(client.post("/api/v1/datasets", json={"file": "text,label"}), 415, "unsupported_media_type")


def test_oversize_upload_is_413_json(settings):
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1)})
    content = b"text,label\n" + b"x" * (1024 * 1024 + 10) + b",a\n"
    error = assert_error(upload(api_client(app), content), 413, "payload_too_large")
    assert "1 MB" in error["message"]
    assert dataset_count() == 0


def test_long_file_name_without_name_is_cut_to_fit(client):
    """A name derived from a long file name is cut to the column's size, not a 422 about a field never sent."""
    response = upload(client, GOOD, "r" * 240 + ".csv")
    assert response.status_code == 201, response.json
    assert response.json["name"] == "r" * 200 and response.json["filename"] == "r" * 240 + ".csv"


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


# ---------------------------------------------------------------- TSV and JSON Lines

TSV = b"text\tlabel\nI loved it, really\tpos\nterrible\tneg\nfine film\tpos\n"
JSONL = (b'{"text": "I loved it", "label": "pos", "stars": 5}\n'
         b'{"text": "terrible", "label": "neg", "stars": 1.5}\n'
         b'{"text": "fine film", "label": "pos", "stars": null}\n')


def stored(dataset_id: int) -> Dataset:
    with db.session() as session:
        dataset = session.get(Dataset, dataset_id)
        dataset.content  # noqa: B018 - load the deferred column before the session closes
        return dataset


@pytest.mark.parametrize("filename", ["reviews.tsv", "reviews.txt", "reviews"])
def test_upload_tsv(client, filename):
    response = upload(client, TSV, filename)
    assert response.status_code == 201, response.json
    body = response.json
    schemas.Dataset.model_validate(body)
    assert (body["format"], body["rows"], body["columns"]) == ("tsv", 3, ["text", "label"])
    assert body["preview"][0] == {"text": "I loved it, really", "label": "pos"}
    assert body["column_stats"]["label"]["top_values"] == [["pos", 2], ["neg", 1]]
    row = stored(body["id"])
    assert (row.format, row.content, row.filename) == ("tsv", TSV, filename)
    assert row.profile == {"preview": body["preview"], "column_stats": body["column_stats"]}


@pytest.mark.parametrize("filename", ["reviews.jsonl", "reviews.ndjson", "reviews.txt"])
def test_upload_jsonl(client, filename):
    response = upload(client, JSONL, filename)
    assert response.status_code == 201, response.json
    body = response.json
    schemas.Dataset.model_validate(body)
    assert (body["format"], body["rows"], body["columns"]) == ("jsonl", 3, ["text", "label", "stars"])
    assert body["preview"] == [
        {"text": "I loved it", "label": "pos", "stars": "5"},
        {"text": "terrible", "label": "neg", "stars": "1.5"},
        {"text": "fine film", "label": "pos", "stars": ""},
    ]
    assert body["column_stats"]["stars"] == {"distinct": 2, "empty": 1, "label_like": False, "top_values": None}
    assert stored(body["id"]).content == JSONL and body["size_bytes"] == len(JSONL)


class Unseekable(io.RawIOBase):
    """An endless (or ``data``-long) stream that cannot seek, counting the bytes taken from it."""

    def __init__(self, data: bytes | None = None) -> None:
        super().__init__()
        self.data, self.taken = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.data is None:
            chunk = b"x" * len(buffer)
        else:
            chunk = self.data[self.taken:self.taken + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.taken += len(chunk)
        return len(chunk)


def test_service_reads_streams_from_their_position_and_detects_by_content(app):
    from web import services

    owner = make_user("owner")
    principal = Principal(id=owner.id, username=owner.username, is_admin=False)
    stream = io.BytesIO(b"junk before" + JSONL)
    stream.seek(len(b"junk before"))
    with app.app_context():
        body = services.create_dataset(principal, stream, None)
        unseekable = services.create_dataset(principal, io.BufferedReader(Unseekable(TSV)), "x")
    assert (body["format"], body["filename"], body["name"], body["rows"]) == ("jsonl", "upload.jsonl", "upload", 3)
    assert stored(body["id"]).content == JSONL
    assert (unseekable["format"], unseekable["rows"], stored(unseekable["id"]).content) == ("tsv", 3, TSV)


def test_service_refuses_an_oversize_stream_after_reading_just_past_the_limit(settings):
    from web import create_app, services
    from web.errors import ApiError

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_upload_mb=1)})
    endless = Unseekable()
    with app.app_context(), pytest.raises(ApiError) as info:
        services.create_dataset(Principal(id=1, username="nobody", is_admin=False), endless, "big.csv")
    assert (info.value.status, info.value.code) == (413, "payload_too_large")
    assert endless.taken <= 2**20 + 64 * 1024  # the limit plus at most one read
    assert dataset_count() == 0


@pytest.mark.parametrize(
    "content, filename, code, fragment",
    [
        (b"text\tlabel\na\tb\tc\n", "x.tsv", "invalid_csv", "line 2: 3 fields, but the header has 2"),
        (b"text\tlabel\n", "x.tsv", "empty_file", "no data rows"),
        ("text\tlabel\ncaf\xe9\ta\n".encode("latin-1"), "x.tsv", "invalid_encoding", "UTF-8 (byte 14)"),
        (b'{"text": "a"}\n{"text": "b", "label": "x"}\n', "x.jsonl", "invalid_jsonl",
         "line 2: key 'label' is not in the first object's keys"),
        (b'{"text": "a"}\n["b"]\n', "x.jsonl", "invalid_jsonl", "line 2: expected a JSON object"),
        (b'{"text": "a"}\n{"text": \n', "x.jsonl", "invalid_jsonl", "line 2: invalid JSON"),
        (b'{"text": "a\x00"}\n', "x.jsonl", "invalid_jsonl", "NUL"),
        (b"\n  \n", "x.jsonl", "empty_file", "the file is empty"),
        (b'{"text": "a"}\n', "x.csv", "empty_file", "no data rows"),  # the extension wins: a 1-column CSV
    ],
)
def test_bad_tsv_and_jsonl_are_400_and_store_nothing(client, content, filename, code, fragment):
    error = assert_error(upload(client, content, filename), 400, code)
    assert fragment in error["message"]
    assert dataset_count() == 0


def test_get_returns_the_profile_stored_at_upload(client):
    dataset_id = upload(client, JSONL, "r.jsonl").json["id"]
    marker = {"preview": [], "column_stats": {"text": {"distinct": 7, "empty": 0, "label_like": False,
                                                        "top_values": None}}}
    with db.session() as session:
        session.get(Dataset, dataset_id).profile = marker
    detail = client.get(f"/api/v1/datasets/{dataset_id}").json
    assert detail["format"] == "jsonl" and detail["column_stats"] == marker["column_stats"]
    assert detail["preview"] == []
    listing = client.get("/api/v1/datasets").json["items"]
    assert listing[0]["format"] == "jsonl" and "column_stats" not in listing[0]


def test_old_rows_get_their_profile_computed_once_and_stored(client):
    from .factories import make_dataset

    dataset_id = make_dataset(TSV)  # written like a dataset from before profiles: profile NULL, format csv
    assert stored(dataset_id).profile is None
    detail = client.get(f"/api/v1/datasets/{dataset_id}").json
    assert detail["format"] == "csv" and detail["preview"][1] == {"text": "terrible", "label": "neg"}
    assert stored(dataset_id).profile == {"preview": detail["preview"], "column_stats": detail["column_stats"]}


def test_train_on_a_jsonl_dataset(client, sent):
    dataset_id = upload(client, JSONL, "r.jsonl").json["id"]
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label"}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.json
    assert sent == [(response.json["id"], "train")]
    bad = {"dataset_id": dataset_id, "text_column": "text", "label_column": "nope"}
    error = assert_error(client.post("/api/v1/jobs/train", json=bad), 422, "unknown_column")
    assert error["message"] == "column(s) 'nope' not in the dataset; it has text, label, stars"


CONLL = ("-DOCSTART- O\n\nEmpire\tB-location\nState\tI-location\nrocks\tO\n\n@bob\tB-person\nsays\tO\nhi\tO\n"
         "\nJoe\tB-person\n")


def test_a_conll_upload_is_a_token_dataset_with_sentence_token_and_tag_counts(client):
    """CoNLL (detected by extension, or by content for a .txt) is stored with the columns tokens and tags (JSON
    arrays); the dataset answer and page show sentences, tokens and tag counts (issue 17)."""
    for filename in ("wnut.conll", "wnut.txt"):
        response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(CONLL.encode()), filename)},
                               content_type="multipart/form-data")
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        assert body["format"] == "conll" and body["columns"] == ["tokens", "tags"] and body["rows"] == 3
        assert json.loads(body["preview"][0]["tokens"]) == ["Empire", "State", "rocks"]
        stats = client.get(f"/api/v1/datasets/{body['id']}").get_json()["list_stats"]
        assert (stats["tokens"]["rows"], stats["tokens"]["items"]) == (3, 7)
        assert dict(stats["tags"]["top_values"]) == {"O": 3, "B-person": 2, "B-location": 1, "I-location": 1}
    page = client.get(f"/datasets/{body['id']}").get_data(as_text=True)
    assert 'id="token-stats"' in page and "B-person <b>2</b>" in page


def test_a_conll_line_of_one_column_is_a_clear_400(client):
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(b"Empire\tB-location\nState\n"), "x.conll")},
                           content_type="multipart/form-data")
    assert_error(response, 400, "invalid_conll")
    assert "line 2" in response.get_json()["error"]["message"]
