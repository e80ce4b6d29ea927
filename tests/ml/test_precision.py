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


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_gets_bf16_where_supported_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert amp_dtype("cuda") is expected
    assert amp_dtype("cuda:1") is expected
    assert amp_dtype("cuda", "off") is None  # AMP=off: fp32 on the GPU too
    chosen = Precision.for_device("cuda")
    assert chosen.dtype is expected
    assert (chosen.scaler is not None) == (expected is torch.float16)  # only fp16 needs loss scaling
    assert chosen.name == ("bf16" if bf16 else "fp16")


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
    assert result.metrics["amp"] in ("bf16", "fp16") and result.metrics["device"] == "cuda"
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
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 0.02
