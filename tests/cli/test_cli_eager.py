"""``bertqueue`` against the real app served over HTTP (eager Celery, SQLite): upload, train a tiny model, classify
texts and a file to CSV, list and show jobs and models, and the exit statuses of failures."""
from __future__ import annotations

import csv
import json

import pytest

from cli import main as cli_main
from tests.web.factories import make_classify_job, make_model
from tests.integration.conftest import sample_csv

from .conftest import invoke, ok, serving, train_args

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["thanks, the crew was amazing!", "worst flight ever, lost my bag"]


@pytest.fixture
def trained(bq, tmp_path, tiny_bert_dir) -> dict:
    """A tiny model named cli-model, trained from a CSV file given to `train` (uploaded by the command)."""
    data = tmp_path / "tweets.csv"
    data.write_bytes(sample_csv(40))
    job = json.loads(ok(bq("--json", *train_args(str(data), tiny_bert_dir, "--name", "cli-model", "--wait"))))
    assert job["status"] == "succeeded" and job["type"] == "train" and job["progress"] == 1.0
    return job


def test_upload_train_classify_and_list(bq, tmp_path, trained):
    model_id = trained["model_id"]

    # datasets: upload (JSON answer) and the list (the file `train` uploaded is there too)
    texts_file = tmp_path / "to-classify.csv"
    rows = [{"id": f"r{i}", "text": f"flight {i} was " + ("great" if i % 2 else "late")} for i in range(7)]
    with texts_file.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    uploaded = json.loads(ok(bq("--json", "datasets", "upload", str(texts_file), "--name", "inbox")))
    assert (uploaded["name"], uploaded["rows"], uploaded["columns"]) == ("inbox", 7, ["id", "text"])
    listed = json.loads(ok(bq("--json", "datasets")))
    assert {"inbox", "tweets"} <= {d["name"] for d in listed["items"]}
    assert "inbox" in ok(bq("datasets"))

    # classify texts by id: the predictions as JSON, and as a table
    answer = json.loads(ok(bq("--json", "classify", "--model", str(model_id), "--text", TEXTS[0], "-t", TEXTS[1])))
    assert answer["model_id"] == model_id
    assert [p["text"] for p in answer["predictions"]] == TEXTS
    assert all(p["label"] in LABELS and set(p["scores"]) == set(LABELS) for p in answer["predictions"])
    table = ok(bq("classify", "--model", str(model_id), "--text", TEXTS[0]))
    assert answer["predictions"][0]["label"] in table

    # classify a file by the model's name: uploaded as a dataset, every prediction exported to CSV; no
    # --text-column: the text is read from the column the model was trained on ("text")
    out = tmp_path / "out.csv"
    result = bq("classify", "--model", "cli-model", str(texts_file), "--id-column", "id", "-o", str(out))
    ok(result)
    assert f"to {out}" in result.stderr
    with out.open(encoding="utf-8-sig", newline="") as f:
        exported = list(csv.DictReader(f))
    assert [(r["id"], r["text"]) for r in exported] == [(r["id"], r["text"]) for r in rows]
    assert all(r["label"] in LABELS for r in exported)
    assert list(exported[0])[:5] == ["index", "id", "text", "label", "score"]
    assert not out.with_name("out.csv.part").exists()

    # jobs, job, models, model
    jobs = json.loads(ok(bq("--json", "jobs", "--type", "train")))
    assert [j["id"] for j in jobs["items"]] == [trained["id"]]
    assert {j["type"] for j in json.loads(ok(bq("--json", "jobs")))["items"]} == {"train", "classify"}
    shown = ok(bq("job", trained["id"]))
    assert "succeeded" in shown and trained["id"] in shown
    models = json.loads(ok(bq("--json", "models", "--name", "cli-model")))
    assert [(m["id"], m["name"], m["version"]) for m in models["items"]] == [(model_id, "cli-model", 1)]
    assert "cli-model" in ok(bq("models"))
    assert json.loads(ok(bq("--json", "model", "cli-model:1")))["id"] == model_id

    # evaluate on the training data (its columns default to the model's)
    tweets = next(d["id"] for d in listed["items"] if d["name"] == "tweets")
    evaluation = json.loads(ok(bq("--json", "evaluate", "--model", "cli-model", "--dataset", tweets, "--wait")))
    assert evaluation["type"] == "evaluate" and evaluation["metrics"]["examples"] == 40
    assert "accuracy=" in ok(bq("job", evaluation["id"]))


def test_failed_job_exits_1_with_its_error_on_stderr(bq, tmp_path):
    data = tmp_path / "tweets.csv"
    data.write_bytes(sample_csv(20))
    result = bq("--json", *train_args(str(data), tmp_path / "no-such-encoder", "--wait"))
    assert result.exit_code == cli_main.EXIT_FAILED, result.output
    job = json.loads(result.stdout)  # --json still prints the job
    assert job["status"] == "failed"
    assert f"job {job['id']} failed: " in result.stderr and job["error"] in result.stderr
    # without --wait the job is only shown: the command itself succeeded
    assert bq("job", job["id"]).exit_code == 0
    assert bq("job", job["id"], "--wait").exit_code == cli_main.EXIT_FAILED


def test_cancelled_job_exits_3(bq):
    # a queued job that no worker picks up: its message was never sent
    job_id = make_classify_job(make_model(), ["queued text"])
    assert json.loads(ok(bq("--json", "cancel", job_id)))["status"] == "cancelled"
    result = bq("job", job_id, "--wait")
    assert result.exit_code == cli_main.EXIT_CANCELLED
    assert f"job {job_id} was cancelled" in result.stderr


def test_api_errors_exit_4_with_the_message_on_stderr(bq, server_url, admin_token):
    unauthorized = invoke(server_url, "not-a-token", "jobs")
    assert unauthorized.exit_code == cli_main.EXIT_API
    assert "HTTP 401 unauthorized" in unauthorized.stderr and not unauthorized.stdout
    no_token = invoke(server_url, None, "models")
    assert no_token.exit_code == cli_main.EXIT_API and "Authorization: Bearer" in no_token.stderr

    unknown_model = bq("classify", "--model", "999999", "--text", "hello")
    assert unknown_model.exit_code == cli_main.EXIT_API and "HTTP 404 not_found" in unknown_model.stderr
    assert bq("job", "no-such-job").exit_code == cli_main.EXIT_API
    assert bq("download", "no-such-model", "-o", "x.zip").exit_code == cli_main.EXIT_API

    invalid = bq("train", "--dataset", "1", "--text-column", "text", "--label-column", "label", "--set", "epochs=0")
    assert invalid.exit_code == cli_main.EXIT_API
    assert "validation_error" in invalid.stderr or "not_found" in invalid.stderr

    unreachable = invoke("http://127.0.0.1:9", admin_token, "jobs")  # the discard port: nothing listens
    assert unreachable.exit_code == cli_main.EXIT_API and "cannot reach http://127.0.0.1:9" in unreachable.stderr


def test_usage_errors_exit_2(bq, tmp_path):
    data = tmp_path / "texts.csv"
    data.write_text("text\nhello\n")
    assert bq("classify", "--model", "1").exit_code == cli_main.EXIT_USAGE  # nothing to classify
    assert bq("classify", "--model", "1", "--text", "a", str(data)).exit_code == cli_main.EXIT_USAGE  # two sources
    assert bq("classify", "--model", "1", "-t", "a", "-o", "x.csv", "--no-wait").exit_code == cli_main.EXIT_USAGE
    assert bq("train", "--dataset", "not-a-file-nor-id").exit_code == cli_main.EXIT_USAGE
    assert bq("train", "--dataset", "1", "--set", "no-equals-sign").exit_code == cli_main.EXIT_USAGE
    assert bq("frobnicate").exit_code == cli_main.EXIT_USAGE


def test_ctrl_c_while_waiting_exits_130_and_leaves_the_job(bq, monkeypatch):
    job_id = make_classify_job(make_model(), ["queued text"])

    def interrupted(client, job, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "wait_for_job", interrupted)
    result = bq("job", job_id, "--wait")
    assert result.exit_code == cli_main.EXIT_INTERRUPTED
    assert f"job {job_id} keeps running" in result.stderr
    assert json.loads(ok(bq("--json", "job", job_id)))["status"] == "queued"


def test_an_upload_over_the_limit_exits_4_with_the_413_message(settings, admin_token, tmp_path):
    from dataclasses import replace

    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": replace(settings, max_upload_mb=1), "WTF_CSRF_ENABLED": False})
    big = tmp_path / "big.csv"
    big.write_bytes(b"text,label\n" + b"a long enough line of text,pos\n" * 70_000)  # about 2 MB
    with serving(app) as url:
        result = invoke(url, admin_token, "datasets", "upload", str(big))
    assert result.exit_code == cli_main.EXIT_API
    assert "HTTP 413 payload_too_large" in result.stderr, result.stderr


def test_train_and_ask_a_multiple_choice_model(bq, tmp_path, tiny_bert_dir):
    """`train --task-type multiple-choice` on a SWAG-style file, then `classify --context --question --choice ...`."""
    from tests.ml.test_mc_training import _examples, _gold, mc_rows

    rows = mc_rows()
    data = tmp_path / "swag.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    job = json.loads(ok(bq("--json", "train", "--task-type", "multiple-choice", "--dataset", str(data), "--encoder",
                           str(tiny_bert_dir), "--epochs", "15", "--name", "swag", "--set", "batch_size=8",
                           "--set", "max_length=24", "--set", "learning_rate=0.003", "--set", "dropout=0",
                           "--set", "validation_split=0", "--set", "seed=0", "--wait")))
    assert job["status"] == "succeeded", job
    example, gold = _examples(rows)[2], _gold(rows)[2]
    answer = json.loads(ok(bq("--json", "classify", "-m", "swag", "--context", example.context, "--question",
                              example.question, *(a for c in example.choices for a in ("--choice", c)))))
    assert answer["predictions"][0]["choice_index"] == gold
    table = ok(bq("classify", "-m", "swag", "--context", example.context, *(a for c in example.choices
                                                                              for a in ("--choice", c))))
    assert example.choices[gold] in table
    refused = bq("classify", "-m", "swag", "--choice", "a")
    assert refused.exit_code == 2 and "--context" in refused.output
