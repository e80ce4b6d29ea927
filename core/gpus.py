"""Which GPUs a deployment runs workers on: the ``GPUS`` setting, read by the launcher before it starts them.

``GPUS``: empty (no GPU workers: one classification and one training worker on ``DEVICE``), ``all``, or device
indices ``0,1`` as ``nvidia-smi -L`` numbers them. The launcher (``scripts/run_stack.py``, also the entry point of
compose's ``gpu`` profile) starts one classification worker and one training worker per GPU, each with
``CUDA_VISIBLE_DEVICES`` set to its device and ``DEVICE=cuda`` -- never ``auto``, so a worker that cannot reach its
GPU fails instead of quietly running on the CPU.

No torch here, and no CUDA: a parent that initialised CUDA before forking would hand its children a broken CUDA
context, and importing torch costs seconds. The devices are counted from ``CUDA_VISIBLE_DEVICES`` when the
launcher's own environment restricts them, else from ``nvidia-smi -L``. ``GPUS`` naming a device that is not
there, or any GPU asked for where none is found, is a :class:`GpuConfigError` with a message that says what was
found.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping

_GPU_LINE = re.compile(r"^GPU (\d+):")


class GpuConfigError(ValueError):
    """``GPUS`` asks for GPUs this machine does not have (or the value itself is malformed)."""


def parse_gpus(value: str | None) -> list[str] | str | None:
    """``GPUS`` -> None (no GPU workers), ``"all"``, or the device indices as strings (``"0,1"`` -> ["0", "1"]).

    Raises :class:`GpuConfigError` for anything else (a negative or non-numeric index, a repeated one)."""
    text = (value or "").strip().lower()
    if not text or text in ("none", "no", "off"):
        return None
    if text == "all":
        return "all"
    items = [item.strip() for item in text.split(",")]
    if any(not item.isdigit() for item in items):
        raise GpuConfigError(f"GPUS={value!r}: use all, or device indices separated by commas such as 0,1")
    if len(set(items)) != len(items):
        raise GpuConfigError(f"GPUS={value!r} names a device twice")
    return [str(int(item)) for item in items]


def _nvidia_smi(run: Callable[..., subprocess.CompletedProcess]) -> list[str] | None:
    """Device indices ``nvidia-smi -L`` lists; None when there is no nvidia-smi (no driver) or it fails."""
    if shutil.which("nvidia-smi") is None and run is subprocess.run:
        return None
    try:
        done = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [m.group(1) for line in done.stdout.splitlines() if (m := _GPU_LINE.match(line.strip()))]


def detect_gpus(environ: Mapping[str, str] | None = None,
                run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """The CUDA devices this launcher may hand out, without touching CUDA: the entries of
    ``CUDA_VISIBLE_DEVICES`` when it is set (indices or ``GPU-...`` UUIDs; empty or ``-1``: none), else the
    indices ``nvidia-smi -L`` lists (none without a driver)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [item.strip() for item in visible.split(",") if item.strip()]
        # CUDA stops at the first invalid entry (a negative index hides every device after it)
        out = []
        for entry in entries:
            if entry.startswith("-"):
                break
            out.append(entry)
        return out
    return _nvidia_smi(run) or []


def resolve_gpus(value: str | None, environ: Mapping[str, str] | None = None,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[str]:
    """The devices to start one worker pair on for ``GPUS=value``: [] when no GPU is asked for, every detected
    device for ``all``, else the named ones. Raises :class:`GpuConfigError` when a GPU is asked for and none is
    found, or a named index is not among those detected (its message says what was found)."""
    wanted = parse_gpus(value)
    if wanted is None:
        return []
    available = detect_gpus(environ, run)
    if not available:
        raise GpuConfigError(f"GPUS={value} asks for GPUs but this machine has no CUDA device visible (no "
                             "nvidia-smi, no driver, or CUDA_VISIBLE_DEVICES hides them all); unset GPUS to run "
                             "on the CPU")
    if wanted == "all":
        return available
    env = os.environ if environ is None else environ
    if env.get("CUDA_VISIBLE_DEVICES") is not None:  # indices then count within CUDA_VISIBLE_DEVICES, as CUDA's do
        missing = [index for index in wanted if int(index) >= len(available)]
        chosen = [available[int(index)] for index in wanted if int(index) < len(available)]
    else:
        missing = [index for index in wanted if index not in available]
        chosen = list(wanted)
    if missing:
        raise GpuConfigError(f"GPUS={value} names device(s) {', '.join(missing)}, but this machine has "
                             f"{len(available)} CUDA device(s): {', '.join(available)} (indices from 0)")
    return chosen
