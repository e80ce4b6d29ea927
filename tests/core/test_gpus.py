"""GPUS: parsing, counting the devices without CUDA (nvidia-smi / CUDA_VISIBLE_DEVICES), clear start-up errors,
and the launcher's one-worker-per-GPU layout. No GPU needed: nvidia-smi and the CUDA probe are faked."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.config import Settings
from core.gpus import GpuConfigError, detect_gpus, parse_gpus, resolve_gpus

SMI = ("GPU 0: NVIDIA H200 (UUID: GPU-11111111-2222-3333-4444-555555555555)\n"
       "GPU 1: NVIDIA H200 (UUID: GPU-66666666-7777-8888-9999-000000000000)\n")


def smi(stdout: str = SMI, code: int = 0):
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, code, stdout=stdout, stderr="")

    run.calls = calls
    return run


def no_smi(command, **kwargs):
    raise FileNotFoundError("nvidia-smi")


@pytest.mark.parametrize("value, parsed", [("", None), (None, None), ("  ", None), ("all", "all"), ("ALL", "all"),
                                           ("0", ["0"]), ("0,1", ["0", "1"]), (" 1 , 3 ", ["1", "3"])])
def test_gpus_values(value, parsed):
    assert parse_gpus(value) == parsed


@pytest.mark.parametrize("value", ["gpu0", "0;1", "-1", "0,0", "1.5", "0,,1"])
def test_malformed_gpus_is_refused_with_the_setting_named(value):
    with pytest.raises(GpuConfigError, match="GPUS"):
        parse_gpus(value)
    with pytest.raises(ValueError):  # at start-up of every process: Settings checks it too
        Settings.from_env({"GPUS": value})


def test_devices_are_counted_with_nvidia_smi_without_touching_cuda():
    run = smi()
    assert detect_gpus({}, run) == ["0", "1"]
    assert run.calls == [["nvidia-smi", "-L"]]
    assert "torch" not in sys.modules or not _cuda_initialized()


def _cuda_initialized() -> bool:
    import torch

    return torch.cuda.is_initialized()


def test_cuda_visible_devices_in_the_launchers_environment_restricts_them():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, no_smi) == ["2", "3"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}, smi()) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, smi()) == ["1"]  # CUDA stops at an invalid entry
    assert resolve_gpus("all", {"CUDA_VISIBLE_DEVICES": "GPU-abc,GPU-def"}, no_smi) == ["GPU-abc", "GPU-def"]
    # indices count within CUDA_VISIBLE_DEVICES, as CUDA's own do
    assert resolve_gpus("1", {"CUDA_VISIBLE_DEVICES": "4,5"}, no_smi) == ["5"]


def test_all_and_named_devices_resolve():
    assert resolve_gpus("all", {}, smi()) == ["0", "1"]
    assert resolve_gpus("1", {}, smi()) == ["1"]
    assert resolve_gpus("", {}, no_smi) == []  # no GPU asked for: nothing is probed


@pytest.mark.parametrize("value", ["all", "0"])
def test_gpus_without_any_cuda_device_is_a_clear_error(value):
    for run in (no_smi, smi("", code=9), smi("No devices were found\n")):
        with pytest.raises(GpuConfigError, match="no CUDA device"):
            resolve_gpus(value, {}, run)


def test_a_device_that_does_not_exist_is_named_in_the_error():
    with pytest.raises(GpuConfigError, match=r"device\(s\) 2, 7.*2 CUDA device\(s\)"):
        resolve_gpus("0,2,7", {}, smi())


def test_the_launcher_starts_one_worker_pair_per_gpu_with_its_device(monkeypatch):
    from scripts.run_stack import celery_worker_commands, worker_processes

    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    cpu = worker_processes([])
    assert {name: env for name, (_, env) in cpu.items()} == {"train worker": {}, "classify worker": {}}
    assert [command for command, _ in cpu.values()] == list(celery_worker_commands().values())

    gpu = worker_processes(["0", "1"])
    assert set(gpu) == {"train worker gpu0", "classify worker gpu0", "train worker gpu1", "classify worker gpu1"}
    for k, device in enumerate(["0", "1"]):
        for kind in ("train", "classify"):
            command, env = gpu[f"{kind} worker gpu{k}"]
            # never auto: no CPU fallback; devices counted as nvidia-smi (and GPUS) count them
            assert env == {"CUDA_VISIBLE_DEVICES": device, "DEVICE": "cuda", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
            assert command[command.index("-n") + 1] == f"{kind}-gpu{k}@%h"  # node names stay distinct
            assert command[command.index("-Q") + 1] == kind
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # an operator's own choice is kept
    assert worker_processes(["0"])["train worker gpu0"][1]["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    only = worker_processes(["GPU-abc"], ("classify",))
    assert list(only) == ["classify worker gpu0"]
    assert only["classify worker gpu0"][1]["CUDA_VISIBLE_DEVICES"] == "GPU-abc"


def test_the_launcher_refuses_to_start_when_gpus_cannot_be_had(monkeypatch, capsys):
    import scripts.run_stack as run_stack

    monkeypatch.setenv("GPUS", "3")
    monkeypatch.setattr(run_stack, "resolve_gpus", lambda value: resolve_gpus(value, {}, smi()))
    assert run_stack.main([]) == 2
    assert "cannot start: GPUS=3 names device(s) 3" in capsys.readouterr().out


def test_a_gpu_worker_without_cuda_stops_at_start_up():
    from ml.device import DeviceUnavailableError
    from worker.device import check_gpu_at_startup

    def probe(output: str, code: int, stderr: str = ""):
        return lambda command, **kw: subprocess.CompletedProcess(command, code, stdout=output, stderr=stderr)

    assert check_gpu_at_startup("cpu", probe("", 1)) is None  # nothing probed for a CPU worker
    assert check_gpu_at_startup("auto", probe("", 1)) is None
    assert check_gpu_at_startup("cuda", probe("2\n", 0)) == 2
    with pytest.raises(DeviceUnavailableError, match="DEVICE=cuda but no CUDA device"):
        check_gpu_at_startup("cuda", probe("0\n", 3))
    with pytest.raises(DeviceUnavailableError, match="driver too old"):
        check_gpu_at_startup("cuda", probe("", 1, "RuntimeError: driver too old"))


def test_a_training_that_runs_the_gpu_out_of_memory_fails_with_advice():
    import torch

    from worker.jobs.train import GPU_OOM_MESSAGE, TrainingJob

    message = TrainingJob().failure_message(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert message == GPU_OOM_MESSAGE and "MAX_TRAIN_BATCH_TOKENS" in message
    assert TrainingJob().failure_message(RuntimeError("shape mismatch")) is None  # a crash stays a crash


@pytest.mark.slow
def test_a_real_worker_started_for_a_gpu_exits_at_start_up_without_one(tmp_path):
    """`celery worker` with DEVICE=cuda (what GPUS sets) on a machine without CUDA: exit code 78 and the reason in
    its log, before it takes any message (Redis is not even reachable here)."""
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from pathlib import Path

    env = dict(os.environ, DEVICE="cuda", REDIS_URL="redis://127.0.0.1:1/0",
               DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}", PYTHONPATH=str(Path(__file__).parents[2]))
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "classify",
                           "-n", "gpu-probe@%h", "--pool", "threads", "--concurrency", "1", "--without-gossip",
                           "--without-mingle"], cwd=Path(__file__).parents[2], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 78, done.stderr[-2000:]
    assert "DEVICE=cuda but no CUDA device is usable" in done.stdout + done.stderr


def test_a_cpu_worker_initialises_no_cuda(settings):
    from worker.device import initialise_gpu

    assert initialise_gpu() is None


def test_only_mode_starts_one_worker_per_gpu_and_nothing_else(monkeypatch):
    """`run_stack.py --only classify` (compose's gpu profile): one supervised classification worker per GPU, each
    with its device; no Redis, migrations, reconciler or web."""
    import scripts.run_stack as run_stack

    started = []

    class FakeProcess:
        pid = 12345

        def poll(self):
            return None

    def fake_start(command, env=None, **kwargs):
        started.append((command, env))
        return FakeProcess()

    def interrupt(children):
        raise KeyboardInterrupt

    monkeypatch.setenv("GPUS", "all")
    monkeypatch.setattr(run_stack, "resolve_gpus", lambda value: resolve_gpus(value, {}, smi()))
    monkeypatch.setattr(run_stack, "_start", fake_start)
    monkeypatch.setattr(run_stack, "supervise", interrupt)
    monkeypatch.setattr(run_stack, "stop_all", lambda children: None)
    monkeypatch.setattr(run_stack.signal, "signal", lambda *args: None)
    monkeypatch.setattr(run_stack.subprocess, "run", lambda *a, **k: pytest.fail("--only runs no set-up step"))
    assert run_stack.main(["--only", "classify"]) == 0
    assert len(started) == 2
    for k, (command, env) in enumerate(started):
        assert command[command.index("-Q") + 1] == "classify"
        assert command[command.index("-n") + 1] == f"classify-gpu{k}@%h"
        assert env["CUDA_VISIBLE_DEVICES"] == str(k) and env["DEVICE"] == "cuda"


def test_a_failed_training_frees_what_its_frames_held_before_the_cache_is_released(monkeypatch, tmp_path):
    """The model, the optimizer's state and the activations of a training that failed live in its frames, which the
    error on its way out keeps alive: the worker clears them before handing the CUDA cache back, or nothing would
    be freed in the case that matters most (a training that ran out of memory)."""
    import types
    import weakref

    from worker.jobs import train

    class Model:  # stands for tensors on the GPU
        pass

    held: list[weakref.ref] = []
    alive_at_release: list[bool] = []

    def failing_training(*_args):
        model = Model()
        held.append(weakref.ref(model))
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(train, "_train", failing_training)
    monkeypatch.setattr("ml.device.release_cached_memory",
                        lambda: alive_at_release.append(any(ref() is not None for ref in held)))
    work = types.SimpleNamespace(request=None, rows=[], validation_rows=None, scratch=tmp_path / "scratch",
                                 store=tmp_path)
    with pytest.raises(RuntimeError, match="out of memory") as failure:
        train.TrainingJob().run(work, lease=None)
    assert alive_at_release == [False]
    assert failure.value.__traceback__ is not None  # the error still says where it came from
