"""Device resolution and thread configuration."""
from __future__ import annotations

import pytest
import torch

from worker.device import DeviceUnavailableError, configure_torch_threads, resolve_device


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"
    assert resolve_device(" AUTO ") == "cpu"
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceUnavailableError, match="1 CUDA device"):
        resolve_device("cuda:3")


def test_configure_torch_threads_respects_the_user(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TORCH_NUM_THREADS", "1")
        assert configure_torch_threads() == 1
        monkeypatch.delenv("TORCH_NUM_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert configure_torch_threads() == 1  # an explicit OMP_NUM_THREADS is left alone
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        assert configure_torch_threads() >= 1
    finally:
        torch.set_num_threads(before)
