"""Mixed precision (ml.precision): the dtype chosen per device and AMP setting, the fp16 loss scaler, pinned copies,
and a whole training run under autocast whose saved weights stay fp32.

CUDA is mocked where only the choice is tested; the training runs use CPU autocast (bf16, and fp16 with a
GradScaler) to run the very code path a GPU takes. Real-GPU checks are marked ``cuda`` and skip without one.
"""
from __future__ import annotations

import pytest
import torch

from core.config import Settings
from ml import loop, precision
from ml.precision import Precision, amp_dtype, dtype_name, inference_autocast, to_device
from tests.ml.test_training import config_for, make_rows

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def fresh_bf16_answers():
    """``native_bf16`` caches its answer per device: a test that fakes a GPU must not leave its answer behind."""
    precision.native_bf16.cache_clear()
    yield
    precision.native_bf16.cache_clear()


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
@pytest.mark.parametrize("capability, expected", [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                                   ((7, 5), torch.float16), ((7, 0), torch.float16)],
                         ids=["A100", "H100", "T4", "V100"])
def test_cuda_gets_bf16_where_native_else_fp16(monkeypatch, fresh_bf16_answers, capability, expected):
    """bf16 on Ampere and later only: ``torch.cuda.is_bf16_supported()`` also says yes for an emulated bf16 (a T4
    or V100), which must train in fp16 with a loss scaler instead. Each device is asked about itself."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulated counts as supported
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    assert amp_dtype("cuda") is expected
    assert amp_dtype("cuda:1") is expected
    assert torch.device("cuda:1") in asked  # the device named, not the current one
    assert amp_dtype("cuda", "off") is None  # AMP=off: fp32 on the GPU too
    chosen = Precision.for_device("cuda")
    assert chosen.dtype is expected
    assert (chosen.scaler is not None) == (expected is torch.float16)  # only fp16 needs loss scaling
    assert chosen.name == ("bf16" if expected is torch.bfloat16 else "fp16")


def test_the_cpu_trains_in_fp32():
    assert amp_dtype("cpu") is None
    chosen = Precision.for_device("cpu")
    assert chosen.dtype is None and chosen.scaler is None and chosen.name == "fp32"
    assert isinstance(inference_autocast("cpu"), type(precision.contextlib.nullcontext()))


def test_amp_setting():
    assert Settings.from_env({}).amp == "auto"
    assert Settings.from_env({"AMP": "off"}).amp == "off"
    with pytest.raises(ValueError, match="AMP"):
        Settings.from_env({"AMP": "fp8"})
    with pytest.raises(ValueError, match="AMP"):
        amp_dtype("cuda", "sometimes")
    assert dtype_name(None) == "fp32" and dtype_name(torch.bfloat16) == "bf16"


def test_batches_go_to_cuda_through_pinned_memory_without_blocking():
    class FakeTensor:
        device = torch.device("cpu")

        def __init__(self):
            self.calls = []

        def pin_memory(self):
            self.calls.append("pin")
            return self

        def to(self, device, non_blocking=False):
            self.calls.append(("to", device, non_blocking))
            return self

    tensor = FakeTensor()
    to_device(tensor, "cuda:0")
    assert tensor.calls == ["pin", ("to", "cuda:0", True)]
    plain = torch.ones(2)
    assert to_device(plain, "cpu") is plain  # the CPU: no pinning, no copy


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16_scaled"])
def test_a_training_run_under_autocast_keeps_fp32_weights_and_checkpoint(monkeypatch, tmp_path, tiny_bert_dir,
                                                                         dtype):
    """The loop's one precision object drives every forward / backward / step (here CPU autocast, the same calls a
    GPU makes); the best-checkpoint copy and the saved safetensors stay fp32."""
    from safetensors.torch import load_file

    from models.io import WEIGHTS_NAME

    built = []

    def for_device(device, amp="auto"):
        built.append((device, amp))
        return Precision(device, dtype)

    monkeypatch.setattr(Precision, "for_device", staticmethod(for_device))
    copies = []
    update = loop._Best.update

    def spy(self, model, step, record, evaluation):
        stop = update(self, model, step, record, evaluation)
        if self.state is not None:
            copies.append({v.dtype for v in self.state.values() if v.is_floating_point()})
        return stop

    monkeypatch.setattr(loop._Best, "update", spy)
    result = loop.train_classifier(make_rows(40), config_for("bert", encoder=str(tiny_bert_dir), epochs=2),
                                   tmp_path / "out", amp="auto")
    assert built == [("cpu", "auto")]
    assert result.metrics["amp"] == {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    assert result.metrics["accuracy"] is not None
    assert copies and all(dtypes == {torch.float32} for dtypes in copies)
    saved = load_file(str(tmp_path / "out" / WEIGHTS_NAME))
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.float32}


def test_the_fp16_scaler_unscales_before_clipping_and_steps():
    model = torch.nn.Linear(4, 2)
    chosen = Precision("cpu", torch.float16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with chosen.autocast():
        loss = model(torch.randn(8, 4)).float().pow(2).mean()
    chosen.backward(loss)
    assert chosen.step(optimizer, model.parameters(), 1.0) is True
    assert not torch.equal(before, model.weight)
    assert model.weight.dtype is torch.float32


def test_amp_off_is_passed_through_by_the_worker(monkeypatch):
    """The worker's training call hands AMP to the loop (the setting reaches ml as an argument)."""
    import inspect

    from worker.jobs import train

    assert "amp=runtime.settings().amp" in inspect.getsource(train._train)
    assert inspect.signature(loop.train_classifier).parameters["amp"].default == "auto"


@pytest.mark.cuda
@needs_cuda
def test_cuda_training_uses_amp_and_saves_fp32(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    from models.io import WEIGHTS_NAME

    result = loop.train_classifier(make_rows(40), config_for("bert", encoder=str(tiny_bert_dir), epochs=1),
                                   tmp_path / "out", device="cuda")
    native = torch.cuda.get_device_capability()[0] >= 8
    assert result.metrics["amp"] == ("bf16" if native else "fp16") and result.metrics["device"] == "cuda"
    saved = load_file(str(tmp_path / "out" / WEIGHTS_NAME))
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.float32}
    off = loop.train_classifier(make_rows(40), config_for("bert", encoder=str(tiny_bert_dir), epochs=1),
                                tmp_path / "off", device="cuda", amp="off")
    assert off.metrics["amp"] == "fp32"


@pytest.mark.cuda
@needs_cuda
def test_cuda_serving_runs_in_half_precision_and_answers_in_fp32(tmp_path, tiny_bert_dir):
    from ml.inference import Predictor

    loop.train_classifier(make_rows(40), config_for("bert", encoder=str(tiny_bert_dir), epochs=1), tmp_path / "m")
    cpu = Predictor.load(tmp_path / "m").predict(["great flight", "awful delay"])
    gpu = Predictor.load(tmp_path / "m", device="cuda").predict(["great flight", "awful delay"])
    for a, b in zip(cpu, gpu):
        assert abs(a["score"] - b["score"]) < 0.02
        ranked = sorted(a["scores"].values(), reverse=True)
        if ranked[0] - ranked[1] > 0.04:  # a near tie may flip in half precision: only a clear answer must agree
            assert a["label"] == b["label"]


def _fp16_training(monkeypatch, losses: dict[int, float]):
    """Train under CPU fp16 autocast with a loss scaler (the path a pre-Ampere GPU takes), the losses of the steps
    named in ``losses`` (1-based) replaced as if their fp16 forward pass had overflowed; returns the counts of the
    scheduler's and the optimizer's steps, filled in as the training runs."""
    import transformers

    monkeypatch.setattr(Precision, "for_device", staticmethod(lambda device, amp="auto": Precision(device,
                                                                                                 torch.float16)))
    fitted, calls = loop.fitted_train_step, []

    def overflowing(*args, **kwargs):
        calls.append(1)
        loss = fitted(*args, **kwargs)
        return losses.get(len(calls), loss)

    monkeypatch.setattr(loop, "fitted_train_step", overflowing)
    counts = {"scheduler": 0, "optimizer": 0}
    schedule = transformers.get_linear_schedule_with_warmup

    def counted_schedule(optimizer, *args, **kwargs):
        scheduler = schedule(optimizer, *args, **kwargs)
        step, optimizer_step = scheduler.step, optimizer.step

        def scheduler_step(*a, **k):
            counts["scheduler"] += 1
            return step(*a, **k)

        def stepped(*a, **k):
            counts["optimizer"] += 1
            return optimizer_step(*a, **k)

        scheduler.step, optimizer.step = scheduler_step, stepped
        return scheduler

    monkeypatch.setattr(transformers, "get_linear_schedule_with_warmup", counted_schedule)
    return counts


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_an_fp16_batch_whose_loss_overflows_is_skipped_and_the_schedule_counts_real_steps(monkeypatch, tmp_path,
                                                                                         tiny_bert_dir):
    counts = _fp16_training(monkeypatch, {2: float("inf"), 3: float("nan")})
    result = loop.train_classifier(make_rows(60), config_for("bert", encoder=str(tiny_bert_dir), epochs=2,
                                                             batch_size=16), tmp_path / "out")
    metrics = result.metrics
    assert metrics["steps"] == metrics["total_steps"] == 6 and metrics["amp"] == "fp16"
    assert counts["optimizer"] == counts["scheduler"] == 4  # the two overflowed batches stepped neither
    assert all(record["train_loss"] is None or record["train_loss"] == record["train_loss"]  # no NaN reported
               for record in metrics["history"])
    assert metrics["accuracy"] is not None


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_fp16_losses_that_keep_overflowing_are_a_divergence(monkeypatch, tmp_path, tiny_bert_dir):
    _fp16_training(monkeypatch, {k: float("inf") for k in range(1, loop.MAX_OVERFLOWED_STEPS + 2)})
    with pytest.raises(RuntimeError, match="training diverged at epoch 1, step 4"):
        loop.train_classifier(make_rows(60), config_for("bert", encoder=str(tiny_bert_dir), epochs=2,
                                                        batch_size=8), tmp_path / "out")


def test_an_fp32_loss_that_is_not_finite_fails_at_once(monkeypatch, tmp_path, tiny_bert_dir):
    fitted = loop.fitted_train_step
    monkeypatch.setattr(loop, "fitted_train_step", lambda *a, **k: (fitted(*a, **k), float("nan"))[1])
    with pytest.raises(RuntimeError, match="training diverged at epoch 1, step 1"):
        loop.train_classifier(make_rows(60), config_for("bert", encoder=str(tiny_bert_dir), epochs=1),
                              tmp_path / "out")


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_a_step_the_fp16_scaler_skips_does_not_advance_the_schedule(monkeypatch, tmp_path, tiny_bert_dir):
    """The scaler skips a step whose gradients overflowed (``Precision.step`` says False): the scheduler waits."""
    counts = _fp16_training(monkeypatch, {})
    real_step, calls = Precision.step, []

    def sometimes_skipped(self, optimizer, parameters, max_grad_norm):
        calls.append(1)
        if len(calls) == 1:
            return False  # as the scaler does: no optimizer step
        return real_step(self, optimizer, parameters, max_grad_norm)

    monkeypatch.setattr(Precision, "step", sometimes_skipped)
    loop.train_classifier(make_rows(60), config_for("bert", encoder=str(tiny_bert_dir), epochs=1, batch_size=16),
                          tmp_path / "out")
    assert len(calls) == 3 and counts["optimizer"] == counts["scheduler"] == 2


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_a_stretch_of_skipped_batches_reports_no_training_loss_rather_than_zero(monkeypatch, tmp_path,
                                                                                tiny_bert_dir):
    _fp16_training(monkeypatch, {1: float("inf"), 2: float("inf")})
    config = config_for("bert", encoder=str(tiny_bert_dir), epochs=1, batch_size=8, eval_steps=2)
    history = loop.train_classifier(make_rows(60), config, tmp_path / "out").metrics["history"]
    assert history[0]["step"] == 2 and history[0]["train_loss"] is None  # both its batches overflowed
    assert history[1]["train_loss"] is not None and history[1]["train_loss"] > 0
