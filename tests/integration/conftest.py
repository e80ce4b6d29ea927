"""Fixtures for end-to-end tests: tiny encoders, small CSVs, and helpers to poll jobs."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "data" / "sample_tweets_multitask.csv"


@pytest.fixture(scope="session")
def tiny_encoders(tiny_bert_dir, tiny_distilbert_dir) -> dict[str, Path]:
    """Random-weight tiny encoders: 'bert' (for bert/bert_lstm/multitask) and 'distilbert'."""
    return {"bert": tiny_bert_dir, "distilbert": tiny_distilbert_dir}


def sample_csv(rows: int, columns: tuple[str, ...] = ("text", "sentiment")) -> bytes:
    """The first ``rows`` rows of the bundled sample, restricted to ``columns``, as CSV bytes."""
    with SAMPLE.open(encoding="utf-8", newline="") as f:
        records = [r for _, r in zip(range(rows), csv.DictReader(f))]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode("utf-8")


def upload(client, data: bytes, name: str = "tweets") -> int:
    response = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(data), f"{name}.csv"), "name": name},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def wait_for_job(client, job_id: str, timeout: float = 120.0, statuses=("succeeded", "failed", "cancelled")) -> dict:
    """Poll ``GET /api/v1/jobs/<id>`` until the job reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.25)
