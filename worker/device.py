"""The device this worker process runs models on (``DEVICE``: ``auto`` picks CUDA when there is one)."""
from __future__ import annotations

import logging
import subprocess
import sys

from core import runtime

log = logging.getLogger(__name__)

_resolved: dict[str, str] = {}

# run in a child process: the worker's parent forks its pool and must not initialise CUDA itself
_PROBE = ("import sys, torch\n"
          "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
          "print(n)\n"
          "sys.exit(0 if n else 3)\n")
EX_CONFIG = 78  # sysexits.h: a configuration error (the supervisor's log shows the message above it)


def device() -> str:
    """``"cuda"`` or ``"cpu"`` (``ml.device.resolve_device`` of the setting), resolved once per process."""
    from ml.device import resolve_device

    setting = runtime.settings().device
    # resolved at the first job, in the process that runs it: CUDA must not start before the pool forks
    if _resolved.get(setting) is None:  # the answer never changes within a process
        _resolved[setting] = resolve_device(setting)
    return _resolved[setting]


def check_gpu_at_startup(setting: str, run=subprocess.run) -> int | None:
    """With ``DEVICE=cuda`` (what the launcher sets for every GPU worker), make sure a CUDA device is visible
    before the worker takes a job, probing in a child process. Returns the number of devices (None when the
    setting asks for no GPU); raises :class:`ml.device.DeviceUnavailableError` with the reason when there is none,
    so the worker stops at start-up instead of failing every job (or running on the CPU)."""
    from ml.device import DeviceUnavailableError

    if not str(setting).startswith("cuda"):
        return None
    try:
        done = run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DeviceUnavailableError(f"DEVICE={setting}: could not probe for CUDA ({exc})") from exc
    lines = (done.stdout or "").strip().splitlines()
    count = int(lines[-1]) if lines and lines[-1].strip().isdigit() else 0
    if done.returncode != 0 or count < 1:
        detail = (done.stderr or "").strip().splitlines()[-1:] or ["torch sees no CUDA device"]
        raise DeviceUnavailableError(
            f"DEVICE={setting} but no CUDA device is usable in this worker ({detail[0]}); check the driver, "
            "CUDA_VISIBLE_DEVICES and GPUS, or set DEVICE=auto / cpu to run on the CPU")
    return count


def initialise_gpu() -> str | None:
    """In a process that runs jobs on a GPU (after any fork): create its CUDA context now, so the first job does not
    pay for it and the telemetry reports the GPU's memory from the start. Returns the device, None on the CPU."""
    if not str(runtime.settings().device).startswith("cuda"):
        return None
    import torch

    resolved = device()  # DeviceUnavailableError when the GPU went away since the start-up probe
    torch.cuda.init()
    log.info("CUDA initialised on %s (%s)", resolved, torch.cuda.get_device_name(torch.cuda.current_device()))
    return resolved
