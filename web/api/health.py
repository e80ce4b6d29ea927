"""Liveness and readiness probes."""
from __future__ import annotations

import logging

import redis
from sqlalchemy import text

from core import telemetry
from core.db import db

from .. import context, schemas
from . import bp
from .apidoc import Answer, documented

BROKER_TIMEOUT_S = 1.0
# What an unauthenticated probe learns about a failed check: the exception text (user names, hosts, ports) is logged
# for the operator, never answered.
FAILED = "error: unreachable"

log = logging.getLogger(__name__)


@bp.get("/healthz")
@documented("Liveness: the process is up", responses={200: Answer("up", schemas.Health)})
def healthz():
    """The process is up (no dependencies checked)."""
    return {"status": "ok"}


def _check_database() -> str:
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: the database is unreachable", exc_info=True)
        return FAILED


def _check_broker(workers: list) -> str:
    """PING the broker; when it answers, ``workers`` gets each live worker's device line (``core.telemetry``)."""
    settings = context.settings()
    if settings.celery_eager:
        return "skipped (eager mode: tasks run in-process)"
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=BROKER_TIMEOUT_S, socket_connect_timeout=BROKER_TIMEOUT_S
    )
    try:
        client.ping()
    except Exception:  # noqa: BLE001
        log.warning("readiness: the broker is unreachable", exc_info=True)
        return FAILED
    else:
        try:
            for line in telemetry.device_lines(telemetry.read_snapshots(client)):
                # an anonymous probe learns no host names (as with its errors): the node name without "@host"
                workers.append({**line, "worker": line["worker"].split("@", 1)[0]})
        except Exception:  # noqa: BLE001 - informative only: readiness is the web's, not the workers'
            log.warning("readiness: could not read the workers' snapshots", exc_info=True)
        return "ok"
    finally:
        client.close()


@bp.get("/readyz")
@documented(
    "Readiness: database and broker reachable; the live workers' devices",
    responses={200: Answer("ready", schemas.Health), 503: Answer("not ready", schemas.Health)},
)
def readyz():
    """Ready when the database answers ``SELECT 1`` and the broker answers PING; 503 names what failed (the
    reason is in the log only). ``workers``: each live worker process's device, GPU memory and batch limits
    (informative: the web is ready without workers; jobs wait in their queue)."""
    workers: list = []
    checks = {"database": _check_database(), "broker": _check_broker(workers)}
    failed = [name for name, result in checks.items() if result.startswith("error")]
    if failed:
        return {
            "status": "unavailable",
            "checks": checks,
            "error": {"code": "unavailable", "message": f"not ready: {', '.join(failed)} unreachable"},
        }, 503
    return {"status": "ok", "checks": checks, "workers": workers}
