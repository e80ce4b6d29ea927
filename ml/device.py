"""Choosing the torch device and CPU thread count. Import-light: torch is imported inside the functions.

``resolve_device(setting)``:

* ``"auto"`` (or empty) -> ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``.
* ``"cpu"`` -> ``"cpu"``.
* ``"cuda"`` / ``"cuda:N"`` -> returned as given when CUDA is available; when it is not, a
  :class:`DeviceUnavailableError` (a ``RuntimeError``) is raised with a clear message -- an explicit request for a
  GPU is never silently downgraded to the CPU (that would make jobs 50x slower without anyone noticing). Use
  ``"auto"`` for "GPU if there is one".
* anything else -> ``ValueError``.

Call it in the process that will use the device (the worker child), not before forking.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_NUM_THREADS")


class DeviceUnavailableError(RuntimeError):
    """The configured device (e.g. ``cuda``) does not exist on this machine."""


def resolve_device(setting: str | None = "auto") -> str:
    """Turn a device setting (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``) into a torch device string."""
    value = (setting or "auto").strip().lower()
    if value == "cpu":
        return "cpu"
    if value not in ("auto", "gpu") and not (value == "cuda" or value.startswith("cuda:")):
        raise ValueError(f"unknown device setting {setting!r}; use auto, cpu, cuda or cuda:N")
    import torch

    available = torch.cuda.is_available()
    if value == "auto":
        return "cuda" if available else "cpu"
    if value == "gpu":
        value = "cuda"
    if not available:
        raise DeviceUnavailableError(
            f"device {setting!r} was requested but CUDA is not available on this machine "
            "(set DEVICE=auto to use a GPU only when present, or DEVICE=cpu)"
        )
    if ":" in value:
        index = int(value.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {setting!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return value


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity / container cpusets where the OS reports them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_torch_threads(streams: int = 1) -> int:
    """Set torch's intra-op threads to the CPUs available to this process shared by ``streams`` forward passes that
    run at once (a serving engine's streams, ``ml.batching.EngineOptions``; rounded up), unless the user chose a
    number.

    A user choice is any of ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``TORCH_NUM_THREADS`` in the environment
    (``TORCH_NUM_THREADS`` is applied here). Returns the thread count in effect.
    """
    import torch

    explicit = os.environ.get("TORCH_NUM_THREADS")
    if explicit and explicit.strip().isdigit() and int(explicit) > 0:
        torch.set_num_threads(int(explicit))
    elif not any(os.environ.get(name) for name in THREAD_ENV_VARS):
        wanted = max(1, -(-available_cpus() // max(1, streams)))
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
    return torch.get_num_threads()


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory (``torch.cuda.OutOfMemoryError``, or the plain
    ``RuntimeError`` "CUDA out of memory" / "MPS backend out of memory" of other paths, or cuBLAS failing to
    allocate its workspace), not any other failure."""
    import sys

    torch = sys.modules.get("torch")  # no torch loaded: nothing could have raised its OOM
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(error, oom_type):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "cublas_status_alloc_failed" in message)


def without_frame_locals(error: BaseException) -> BaseException:
    """``error``, with the locals of the frames its traceback passed through cleared: a failed pass's tensors (its
    activations, a training's model and optimizer state), which the error would otherwise keep alive while it is
    kept or propagates, so that :func:`release_cached_memory` can free them (PyTorch's advice: recover from an
    out-of-memory error outside the ``except`` block, without the exception's frames). The traceback stays: it
    still prints where the error came from."""
    import traceback

    traceback.clear_frames(error.__traceback__)
    return error


def release_cached_memory() -> None:
    """Hand the CUDA caching allocator's free blocks back (after an out-of-memory error, before retrying smaller);
    nothing when CUDA was never initialised in this process."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
