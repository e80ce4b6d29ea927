"""Benchmark: importing and downloading a real-size checkpoint through the web (issue 9).

    .venv/bin/python bench/model_files.py [--json bench/results/model_files.json]

A `BertForSequenceClassification` on the packaged all-MiniLM-L6-v2 (3 labels) is saved with `save_pretrained` and
zipped (in a subprocess: the measured process never imports torch, as the web does not). Then, in this process, the
Flask app (test client, SQLite, a scratch model store) imports it with `POST /api/v1/models/import` and downloads it
with `GET /api/v1/models/<id>/download`. Printed: sizes, seconds, the import's and the download's throughput
(MB/s of the zip), and how much the process's peak resident memory grew: the upload is spooled to disk and the
weights are streamed, so it must stay far below the checkpoint's size.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUILD = """
import sys, zipfile, pathlib
from transformers import AutoTokenizer, BertForSequenceClassification
from models.encoders import default_encoder_path
out = pathlib.Path(sys.argv[1])
labels = {0: "negative", 1: "neutral", 2: "positive"}
model = BertForSequenceClassification.from_pretrained(default_encoder_path(), num_labels=3, id2label=labels,
                                                      label2id={v: k for k, v in labels.items()})
model.save_pretrained(out / "checkpoint")
AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(out / "checkpoint")
with zipfile.ZipFile(out / "checkpoint.zip", "w", zipfile.ZIP_DEFLATED) as zf:
    for path in sorted((out / "checkpoint").iterdir()):
        zf.write(path, f"checkpoint/{path.name}")
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from core import runtime
    from core.config import Settings
    from core.db import db
    from core.schema import Base

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        subprocess.run([sys.executable, "-c", BUILD, str(scratch)], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        archive = scratch / "checkpoint.zip"
        zip_mb = archive.stat().st_size / 2**20
        weights_mb = (scratch / "checkpoint" / "model.safetensors").stat().st_size / 2**20

        settings = Settings(database_url=f"sqlite:///{scratch / 'bench.db'}", model_store=str(scratch / "store"),
                            secret_key="bench", celery_eager=True, device="cpu")
        runtime.configure(settings)
        Base.metadata.create_all(db.engine)
        from tests.factories import make_user
        from web import create_app

        app = create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False})
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_user('admin', is_admin=True).token}"
        assert "torch" not in sys.modules, "the measured process must not import torch"

        rss_before = peak_rss_mb()
        started = time.monotonic()
        with open(archive, "rb") as f:
            answer = client.post("/api/v1/models/import", data={"file": (f, "checkpoint.zip"), "name": "minilm"},
                                 content_type="multipart/form-data")
        import_s = time.monotonic() - started
        assert answer.status_code == 201, answer.get_json()
        model = answer.get_json()
        rss_after_import = peak_rss_mb()

        started = time.monotonic()
        response = client.get(f"/api/v1/models/{model['id']}/download", buffered=False)
        downloaded = scratch / "download.zip"
        with open(downloaded, "wb") as out:
            for chunk in response.response:
                out.write(chunk)
        download_s = time.monotonic() - started
        rss_after_download = peak_rss_mb()
        with zipfile.ZipFile(downloaded) as zf:
            names = sorted(zf.namelist())
        result = {
            "checkpoint_weights_mb": round(weights_mb, 1), "upload_zip_mb": round(zip_mb, 1),
            "import_seconds": round(import_s, 2), "import_mb_per_s": round(zip_mb / import_s, 1),
            "download_zip_mb": round(downloaded.stat().st_size / 2**20, 1),
            "download_seconds": round(download_s, 2),
            "download_mb_per_s": round(downloaded.stat().st_size / 2**20 / download_s, 1),
            "peak_rss_before_mb": round(rss_before, 1),  # the app and its libraries loaded
            "peak_rss_growth_import_mb": round(rss_after_import - rss_before, 1),
            "peak_rss_growth_download_mb": round(rss_after_download - rss_after_import, 1),
            "download_entries": names, "torch_imported": "torch" in sys.modules,
        }
        db.dispose()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
