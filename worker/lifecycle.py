"""Process lifetime helpers shared by the launcher and the worker (no torch, no Celery)."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (a no-op elsewhere).

    A launcher or a Celery worker killed with SIGKILL cannot stop its children; without this they would run on as
    orphans (a training child would even keep its job's lease fresh) instead of dying with it like a crashed host.
    Call it in the child, before it does any work (a ``preexec_fn``, or Celery's ``worker_process_init``).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
    except OSError as exc:  # no libc to load: keep running, only the clean-up guarantee is lost
        log.warning("could not set the parent-death signal: %s", exc)
