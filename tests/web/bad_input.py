"""What the per-task bad-input tests share (test_token_bad_input.py, test_qa_bad_input.py, test_mc_bad_input.py):
building and uploading datasets, counting rows, and the checks that a refused request is a clear 4xx which writes
no job (nor a dataset, for a refused upload) and sends no message.

Each test file keeps only what differs: its rows, its cases and its models.
"""
from __future__ import annotations

import io
import json

from sqlalchemy import func, select

from core.db import db
from core.schema import Dataset, Job

from .helpers import assert_error


def jsonl(*rows: dict) -> bytes:
    """JSON Lines of ``rows``, one object a line."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def post_upload(client, content: bytes, filename: str):
    """POST ``content`` as file ``filename`` to the datasets endpoint; the response."""
    return client.post("/api/v1/datasets", data={"file": (io.BytesIO(content), filename)},
                       content_type="multipart/form-data")


def upload(client, content: bytes, filename: str) -> int:
    """Upload a dataset that must be accepted; its id."""
    response = post_upload(client, content, filename)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def count(table) -> int:
    """How many rows ``table`` holds."""
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(table))


def assert_upload_refused(client, content: bytes, filename: str, code: str) -> dict:
    """The upload is a 400 with ``code`` and stores no dataset; returns the error object."""
    error = assert_error(post_upload(client, content, filename), 400, code)
    assert count(Dataset) == 0
    return error


def assert_training_refused(client, sent: list, content: bytes, filename: str, request: dict, status: int,
                            code: str, words: str) -> dict:
    """Upload ``content``, then a train request of ``request`` on it (fields set to None left out) is a ``status``
    with ``code`` whose message holds ``words``, and writes and sends no job; returns the error object."""
    dataset_id = upload(client, content, filename)
    jobs = count(Job)
    body = {k: v for k, v in {"dataset_id": dataset_id, **request}.items() if v is not None}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), status, code)
    assert words in error["message"], error
    assert count(Job) == jobs and sent == []
    return error


def assert_classify_cases_refused(client, sent: list, subtests, path: str, cases) -> None:
    """Each ``(name, body, status, code, words)`` POSTed to ``path`` is a ``status`` with ``code`` whose error holds
    ``words`` (a subtest each); none writes or sends a job."""
    for name, body, status, code, words in cases:
        with subtests.test(msg=name):
            error = assert_error(client.post(path, json=body), status, code)
            assert words in json.dumps(error), error
    assert count(Job) == 0 and sent == []


def assert_evaluation_refused(client, sent: list, model_id: int, dataset_id: int, code: str, words: str) -> None:
    """Evaluating ``model_id`` on ``dataset_id`` is a 422 with ``code`` whose message holds ``words``; no job."""
    error = assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": model_id, "dataset_id": dataset_id}),
                         422, code)
    assert words in error["message"], (model_id, dataset_id, error)
    assert count(Job) == 0 and sent == []
