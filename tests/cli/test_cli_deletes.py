"""``bertqueue datasets delete ID`` against the eager app over HTTP: asked first, refused while a job uses the
dataset, then deleted (and gone from ``datasets``)."""
from __future__ import annotations

import json

from cli import main as cli_main
from tests.web import factories as f

from .conftest import ok


def test_datasets_delete(bq):
    dataset = f.make_dataset(name="old-reviews")
    kept = bq("datasets", "delete", str(dataset), input="n\n")  # asked first: no, nothing happens
    assert kept.exit_code != 0 and "old-reviews" in ok(bq("datasets"))
    job = f.make_train_job(dataset)  # queued: its message was never sent
    refused = bq("datasets", "delete", str(dataset), "--yes")
    assert refused.exit_code == cli_main.EXIT_API
    assert "HTTP 409 dataset_in_use" in refused.stderr and job in refused.stderr
    f.fail(job, "boom")
    deleted = json.loads(ok(bq("--json", "datasets", "delete", str(dataset), "--yes")))
    assert deleted["id"] == dataset and deleted["deleted_at"]
    assert "old-reviews" not in ok(bq("datasets"))
    again = bq("datasets", "delete", str(dataset), "--yes")
    assert again.exit_code == cli_main.EXIT_API and "not_found" in again.stderr
