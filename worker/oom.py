"""Telling a kernel OOM kill of a training job's worker from any other kill (a crash, a deploy's SIGKILL).

Both look alike to Celery: the prefork child dies of SIGKILL, its unacked message comes back
(``task_reject_on_worker_lost``) and the job is re-claimed. A lost worker should resume its job; an OOM-killed one
would only be killed again, ``JOB_MAX_ATTEMPTS`` times. The evidence is the kernel's own count of OOM kills in this
process's memory cgroup -- ``oom_kill`` in ``memory.events`` (cgroup v2, counts the cgroup's descendants too) or in
``memory.oom_control`` (cgroup v1). The training claim records it with the lease (:func:`watch`, stored in
``jobs.oom_watch``); when the job is claimed again after its worker was lost, :func:`verdict` compares: a higher
count in the same cgroup of the same host means the kernel killed a process there while the job ran, and the
job fails with :data:`OOM_MESSAGE` instead of running again. No counter (not Linux, no cgroup file), another host
or another cgroup: no evidence, and the job resumes as before. Another process of the same cgroup OOM-killed
during the job (a shared container) counts too: one wrongly failed job beats a worker killed three times.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
OOM_MESSAGE = ("the worker running this job was killed by the kernel's out-of-memory killer, so it is not retried: "
               "use a smaller batch_size / max_length, or a smaller MAX_TRAIN_BATCH_TOKENS on the worker")


def counter_file(proc_cgroup: Path = PROC_SELF_CGROUP, root: Path = CGROUP_ROOT) -> Path | None:
    """The file holding this process's cgroup ``oom_kill`` count, or None.

    ``/proc/self/cgroup`` names the cgroup (``0::/path`` on v2, ``N:memory:/path`` on v1); inside a container whose
    cgroup is mounted as the root of ``/sys/fs/cgroup`` the named path may not exist there, so the mount's root
    file is tried next.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        relative = path.strip().lstrip("/")
        if "memory" in controllers.split(","):  # v1 memory controller: it then owns the counter
            candidates[:0] = [root / "memory" / relative / "memory.oom_control", root / "memory" / "memory.oom_control"]
        elif hierarchy == "0" and controllers == "":
            candidates += [root / relative / "memory.events", root / "memory.events"]
    return next((c for c in candidates if read_oom_kills(c) is not None), None)


def read_oom_kills(path: Path) -> int | None:
    """The ``oom_kill N`` value of a cgroup ``memory.events`` / ``memory.oom_control`` file, or None."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def watch(proc_cgroup: Path = PROC_SELF_CGROUP, root: Path = CGROUP_ROOT) -> dict | None:
    """What a claim records: ``{"host", "counter", "oom_kills"}`` now, or None where there is no counter."""
    path = counter_file(proc_cgroup, root)
    count = read_oom_kills(path) if path is not None else None
    if count is None:
        return None
    return {"host": socket.gethostname(), "counter": str(path), "oom_kills": count}


def verdict(recorded: dict | None, current: dict | None = None) -> str | None:
    """:data:`OOM_MESSAGE` when the kernel OOM-killed a process of this cgroup since ``recorded`` was taken by the
    lost attempt, else None. ``current``: :func:`watch` now (read when not given)."""
    if not isinstance(recorded, dict):
        return None
    current = watch() if current is None else current
    if current is None or (recorded.get("host"), recorded.get("counter")) != (current["host"], current["counter"]):
        return None  # another host or cgroup: its counter says nothing about that worker
    before = recorded.get("oom_kills")
    if isinstance(before, int) and current["oom_kills"] > before:
        log.warning("OOM kills in %s went from %s to %s while the job ran", current["counter"], before,
                    current["oom_kills"])
        return OOM_MESSAGE
    return None
