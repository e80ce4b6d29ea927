"""Waiting for a job: poll ``GET /api/v1/jobs/<id>`` and show its progress and ETA (rich) on stderr.

The API has no long-poll for a job, so the client polls; the bar is drawn only on a terminal, so stdout stays
clean for ``--json`` and pipes. Byte progress bars for uploads and downloads live here too.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn,
)

from .client import ApiError, Client

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
POLL_S = (0.25, 2.0)  # first and longest pause between polls: quick jobs answer quickly, long ones cost little
OUTAGE_S = 60.0  # how long polling rides out an unreachable or unavailable server (a restart) before giving up

stderr = Console(stderr=True)


def _eta(job: dict) -> str:
    seconds = job.get("eta_seconds")
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours:d}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes:d}:{secs:02d}"


def wait_for_job(client: Client, job: dict, *, show: bool = True) -> dict:
    """Poll until ``job`` is terminal (succeeded, failed, cancelled) and return its last state.

    A KeyboardInterrupt propagates: the caller says the job keeps running.
    """
    pause = POLL_S[0]
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[status]}"),
        TextColumn("{task.fields[eta]}"), TimeElapsedColumn(), console=stderr,
        disable=not (show and stderr.is_terminal), transient=False,
    ) as bar:
        task = bar.add_task(f"{job.get('type', 'job')} {job['id'][:8]}", total=1.0, status=job.get("status", ""),
                            eta="")
        while True:
            bar.update(task, completed=float(job.get("progress") or 0.0), status=job.get("status", ""), eta=_eta(job))
            if job.get("status") in TERMINAL:
                return job
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_S[1])
            job = _poll(client, job)


def _poll(client: Client, job: dict) -> dict:
    """The job's current state; a server that is unreachable or answers 502-504 is asked again for
    :data:`OUTAGE_S` (the job runs on without us), any other error ends the wait."""
    deadline = time.monotonic() + OUTAGE_S
    while True:
        try:
            return client.job(job["id"])
        except ApiError as exc:
            if not (exc.status is None or exc.status in (502, 503, 504)) or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S[1])


@contextmanager
def byte_progress(description: str, total: int | None = None, *, show: bool = True) -> Iterator[tuple]:
    """A bytes bar: yields ``(set_total, advance)`` callbacks for :class:`Client`'s transfers."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=stderr, disable=not (show and stderr.is_terminal), transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield (lambda n: bar.update(task, total=n)), (lambda n: bar.advance(task, n))
