"""The client stands alone: ``cli`` imports none of the platform's packages (nor torch, Flask or SQLAlchemy), and
``make install`` puts a working ``bertqueue`` command in the virtual environment."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BERTQUEUE = Path(sys.executable).with_name("bertqueue")

SCRIPT = """
import sys
import cli.main
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {
    "core", "web", "worker", "ml", "models", "torch", "transformers", "flask", "sqlalchemy", "celery"})
assert not loaded, loaded
print("clean")
"""


def test_the_client_imports_nothing_of_the_platform():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "clean"


def test_python_dash_m_cli_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "cli", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: bertqueue ") and "Exit status:" in result.stdout


def test_installed_console_command_runs_outside_the_checkout(tmp_path):
    if not BERTQUEUE.exists():
        pytest.skip(f"{BERTQUEUE} is not installed: run `make install`")
    result = subprocess.run([str(BERTQUEUE), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("datasets", "train", "classify", "jobs", "job", "models", "download", "import"):
        assert f"  {command} " in result.stdout, command
