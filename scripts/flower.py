"""Flower, Celery's monitor, as an optional process behind HTTP basic auth: ``make flower`` (or compose's ``flower``
profile).

It refuses to start without ``FLOWER_BASIC_AUTH`` (``user:password``, the password at least 16 characters; several
pairs separated by commas): Flower can revoke and terminate tasks and shows every job id, so it is never open.
Flower reads that variable itself (its ``FLOWER_*`` environment options), so the password never appears on a
command line. It listens on ``FLOWER_ADDRESS`` (127.0.0.1) port ``FLOWER_PORT`` (5555) and connects to the broker
of ``REDIS_URL`` through the workers' own Celery app (``worker.celery_app``: the same task names and queues).
Metrics for Prometheus come from the web's ``/metrics``, not from Flower.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_PASSWORD = 16


def check_basic_auth(value: str | None) -> str | None:
    """None when ``FLOWER_BASIC_AUTH`` is usable, else why not."""
    if not value:
        return ("set FLOWER_BASIC_AUTH=user:password (a password of 16+ characters, e.g. "
                "admin:$(openssl rand -hex 16)): Flower is never started without authentication")
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user.strip() or len(password) < MIN_PASSWORD:
            return (f"FLOWER_BASIC_AUTH must be user:password pairs separated by commas, each password at least "
                    f"{MIN_PASSWORD} characters long")
    return None


def flower_command() -> list[str]:
    """``celery flower`` on the workers' app, at FLOWER_ADDRESS:FLOWER_PORT."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower",
            f"--address={os.environ.get('FLOWER_ADDRESS', '127.0.0.1')}",
            f"--port={int(os.environ.get('FLOWER_PORT', '5555'))}"]


def main() -> int:
    problem = check_basic_auth(os.environ.get("FLOWER_BASIC_AUTH"))
    if problem:
        print(f"[bertqueue] cannot start Flower: {problem}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = flower_command()
    os.chdir(REPO_ROOT)
    os.execve(command[0], command, env)  # Flower replaces this process (signals reach it directly)


if __name__ == "__main__":
    sys.exit(main())
