"""``bertqueue import``, ``models --name``, ``model``, ``download`` and ``delete`` against the eager app over HTTP:
versions by name, a refused import, deleting a model in use and after."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from cli import main as cli_main
from tests.web.factories import make_classify_job

from .conftest import ok

LABELS = {0: "neg", 1: "pos"}


@pytest.fixture(scope="module")
def checkpoint_zip(tmp_path_factory, tiny_bert_dir) -> Path:
    """A zipped transformers sequence-classification checkpoint (tiny BERT, safetensors, tokenizer)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("hf-checkpoint")
    model = BertForSequenceClassification.from_pretrained(
        str(tiny_bert_dir), num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model.save_pretrained(str(folder))  # safetensors by default
    AutoTokenizer.from_pretrained(str(tiny_bert_dir)).save_pretrained(str(folder))
    archive = folder.parent / "checkpoint.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return archive


def test_import_versions_download_and_delete(bq, tmp_path, checkpoint_zip, monkeypatch):
    first = json.loads(ok(bq("--json", "import", str(checkpoint_zip), "--name", "imported")))
    assert (first["name"], first["version"], first["labels"]) == ("imported", 1, ["neg", "pos"])
    second_table = ok(bq("import", str(checkpoint_zip), "--name", "imported"))
    assert "imported" in second_table
    versions = json.loads(ok(bq("--json", "models", "--name", "imported")))["items"]
    assert [m["version"] for m in versions] == [2, 1]
    second = versions[0]
    assert json.loads(ok(bq("--json", "model", "imported")))["id"] == second["id"]  # a name: its latest version

    # an imported model classifies like a trained one, by name:version
    answer = json.loads(ok(bq("--json", "classify", "-m", "imported:1", "-t", "what a lovely day")))
    assert answer["model_id"] == first["id"] and answer["predictions"][0]["label"] in LABELS.values()

    # download: the zip streamed to the file named, or to NAME-vVERSION.zip in the working directory
    out = tmp_path / "model.zip"
    downloaded = json.loads(ok(bq("--json", "download", "imported:1", "-o", str(out))))
    assert downloaded["bytes"] == out.stat().st_size and downloaded["model"]["id"] == first["id"]
    with zipfile.ZipFile(out) as zf:
        names = {Path(n).name for n in zf.namelist()}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    monkeypatch.chdir(tmp_path)
    result = bq("download", "imported")
    ok(result)
    assert (tmp_path / "imported-v2.zip").is_file() and "imported-v2.zip" in result.stderr
    assert not list(tmp_path.glob("*.part"))
    unwritable = bq("download", "imported", "-o", str(tmp_path / "no-such-dir" / "m.zip"))
    assert unwritable.exit_code == cli_main.EXIT_LOCAL and "no-such-dir" in unwritable.stderr

    # delete: asked first (no: nothing happens), then done; the old predictions stay readable
    kept = bq("delete", "imported:1", input="n\n")
    assert kept.exit_code != 0 and len(json.loads(ok(bq("--json", "models", "--name", "imported")))["items"]) == 2
    ok(bq("delete", "imported:1", "--yes"))
    assert [m["version"] for m in json.loads(ok(bq("--json", "models", "--name", "imported")))["items"]] == [2]
    assert json.loads(ok(bq("--json", "job", answer["job_id"])))["status"] == "succeeded"
    refused = bq("classify", "-m", "imported:1", "-t", "hello")
    assert refused.exit_code == cli_main.EXIT_API and "model_deleted" in refused.stderr
    again = bq("delete", "imported:1", "--yes")
    assert again.exit_code == cli_main.EXIT_API and "model_deleted" in again.stderr


def test_delete_while_a_job_uses_the_model_is_refused(bq, checkpoint_zip):
    model = json.loads(ok(bq("--json", "import", str(checkpoint_zip), "--name", "busy")))
    job_id = make_classify_job(model["id"], ["waiting"])  # queued: its message was never sent
    result = bq("delete", str(model["id"]), "--yes")
    assert result.exit_code == cli_main.EXIT_API
    assert "HTTP 409 model_in_use" in result.stderr and job_id in result.stderr
    assert json.loads(ok(bq("--json", "model", str(model["id"]))))["id"] == model["id"]


def test_pickled_weights_are_refused_with_the_reason(bq, tmp_path, checkpoint_zip):
    pickled = tmp_path / "pickled.zip"
    with zipfile.ZipFile(checkpoint_zip) as source, zipfile.ZipFile(pickled, "w") as zf:
        for name in source.namelist():
            if name != "model.safetensors":
                zf.writestr(name, source.read(name))
        zf.writestr("pytorch_model.bin", b"\x80\x04not really a pickle")
    result = bq("import", str(pickled), "--name", "pickled")
    assert result.exit_code == cli_main.EXIT_API
    assert "HTTP 422 pickle_weights_refused" in result.stderr
    assert json.loads(ok(bq("--json", "models", "--name", "pickled")))["items"] == []
