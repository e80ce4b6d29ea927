"""The API steps and the data the task-type integration tests share, in eager mode (test_token_flow.py,
test_qa_flow.py, test_mc_flow.py) and on the real stack (test_real_*_worker.py through real_stack.py): upload a
dataset, run a job until it succeeds, read the model and the stored predictions; the 16-row datasets each task type
trains on."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

from .conftest import wait_for_job

NAMES, PLACES = ["Alice", "Bob", "Carol", "Dave"], ["Paris", "Berlin", "Lagos", "Lima"]


def name_place_conll() -> bytes:
    """16 sentences ``<name> Smith flew to <place>``: every name and place seen, in every pairing of four."""
    lines = []
    for i in range(16):
        name, place = NAMES[i % 4], PLACES[(i // 4) % 4]
        words = [(name, "B-person"), ("Smith", "I-person"), ("flew", "O"), ("to", "O"), (place, "B-location")]
        lines += [f"{w}\t{t}" for w, t in words] + [""]
    return "\n".join(lines).encode()


def qa_jsonl(examples: list[dict]) -> bytes:
    """One question a line, its gold answers as SQuAD's ``{"text": [...], "answer_start": [...]}`` (empty lists:
    unanswerable)."""
    return "".join(json.dumps({"question": e["question"], "context": e["context"],
                               "answers": {"text": [t for t, _ in e["answers"]],
                                           "answer_start": [s for _, s in e["answers"]]}}) + "\n"
                   for e in examples).encode()


def swag_csv(rows: list[dict[str, str]]) -> bytes:
    """SWAG's columns: context, question, ending0..ending3 (an empty ending3: a row of 3 choices), label."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


class ApiSteps:
    """Steps through the API with a test ``client``; ``logs`` says what to show when a job fails (a worker's logs)."""

    def __init__(self, client, logs: Callable[[], str] = str) -> None:
        self.client = client
        self.logs = logs

    def upload(self, data: bytes, name: str, fmt: str | None = None, rows: int | None = None) -> int:
        """Upload ``data`` as file ``name``; check it is read as ``fmt`` with ``rows`` rows when given; return the
        dataset id."""
        upload = self.client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), name)},
                                  content_type="multipart/form-data")
        assert upload.status_code == 201, upload.get_json()
        body = upload.get_json()
        if fmt is not None:
            assert (body["format"], body["rows"]) == (fmt, rows)
        return body["id"]

    def run_job(self, kind: str, request: dict, timeout: float = 120, task_type: str | None = None) -> dict:
        """POST ``request`` to ``/api/v1/jobs/<kind>``, wait for the job to succeed (the logs on failure), check its
        ``task_type`` when given, and return the finished job."""
        response = self.client.post(f"/api/v1/jobs/{kind}", json=request)
        assert response.status_code == 202, response.get_json()
        job = wait_for_job(self.client, response.get_json()["id"], timeout=timeout)
        assert job["status"] == "succeeded", f"{job.get('error')}\n{self.logs()}"
        if task_type is not None:
            assert job["task_type"] == task_type
        return job

    def model(self, model_id: int) -> dict:
        """The model as the API serves it."""
        return self.client.get(f"/api/v1/models/{model_id}").get_json()

    def predictions(self, job_id: str, query: str = "") -> list[dict]:
        """The prediction items the API serves for a job (``query``: e.g. ``?label=person``)."""
        return self.client.get(f"/api/v1/jobs/{job_id}/predictions{query}").get_json()["items"]
