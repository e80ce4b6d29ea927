"""The web process never imports torch, transformers, the worker, the ML code or the model code."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from core.config import Settings
from core.db import db
from core.schema import Base
import web
app = web.create_app({"SETTINGS": Settings(database_url=sys.argv[1], celery_eager=True, secret_key="x")})
Base.metadata.create_all(db.engine)
from tests.factories import api_client
client = api_client(app)
for path in ("/", "/train", "/classify", "/api/v1/jobs", "/api/v1/openapi.json", "/metrics"):
    assert client.get(path).status_code == 200, path
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in {"torch", "transformers", "tokenizers", "safetensors", "worker", "ml", "models"})
assert not heavy, heavy
print("clean")
"""


def test_web_never_imports_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'iso.db'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("clean")
