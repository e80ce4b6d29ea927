"""Device resolution and thread configuration."""
from __future__ import annotations

import os

import pytest
import torch

from ml.device import (
    THREAD_ENV_VARS,
    DeviceUnavailableError,
    available_cpus,
    configure_torch_threads,
    resolve_device,
)


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


@pytest.fixture
def torch_threads(monkeypatch):
    """No thread variables in the environment; torch's thread count restored afterwards."""
    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_available_cpus_follows_affinity_then_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert available_cpus() == 3  # the CPUs this process may use, not the machine's

    def no_affinity(pid):
        raise OSError("not supported")

    monkeypatch.setattr(os, "sched_getaffinity", no_affinity, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert available_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cpus() == 1


def test_configure_torch_threads_uses_the_available_cpus(monkeypatch, torch_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    torch.set_num_threads(1)
    assert configure_torch_threads() == 3
    assert torch.get_num_threads() == 3


def test_configure_torch_threads_shares_the_cpus_between_streams(monkeypatch, torch_threads):
    """A serving engine's streams each get their share of the cores (rounded up: every core has work)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for streams, threads in ((1, 8), (2, 4), (3, 3), (4, 2), (8, 1), (16, 1)):
        assert configure_torch_threads(streams=streams) == threads == torch.get_num_threads(), streams


def test_configure_torch_threads_respects_the_user(monkeypatch, torch_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    torch.set_num_threads(1)
    monkeypatch.setenv("TORCH_NUM_THREADS", "2")
    assert configure_torch_threads() == 2 and torch.get_num_threads() == 2  # applied here
    monkeypatch.delenv("TORCH_NUM_THREADS")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "4")
        torch.set_num_threads(1)
        assert configure_torch_threads() == 1, name  # the runtime reads it itself: left alone, not set to 3
        monkeypatch.delenv(name)
    monkeypatch.setenv("TORCH_NUM_THREADS", "lots")
    torch.set_num_threads(2)
    assert configure_torch_threads() == 2  # not a count: ignored, and still a user choice (no override)
