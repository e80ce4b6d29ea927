"""The device this worker process runs models on (``DEVICE``: ``auto`` picks CUDA when there is one)."""
from __future__ import annotations

from core import runtime

_resolved: dict[str, str] = {}


def device() -> str:
    """``"cuda"`` or ``"cpu"`` (``ml.device.resolve_device`` of the setting), resolved once per process."""
    from ml.device import resolve_device

    setting = runtime.settings().device
    # resolved at the first job, in the process that runs it: CUDA must not start before the pool forks
    if _resolved.get(setting) is None:  # the answer never changes within a process
        _resolved[setting] = resolve_device(setting)
    return _resolved[setting]
