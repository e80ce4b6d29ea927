"""A CPU classification worker runs several batches of one model at once (``INFERENCE_STREAMS``), each on its
share of the cores."""
from __future__ import annotations

import os

import pytest
import torch

from ml.device import THREAD_ENV_VARS
from ml.inference import Predictor, drop_predictor
from tests.factories import save_tiny_model

TEXTS = ["lost my bag again", "lovely crew, thanks", "the gate changed twice", "coffee was cold",
         "on time for once", "never again"]


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("streams, threads", [(2, 2), (4, 1), (None, 1)])
def test_a_cpu_worker_splits_its_cores_between_the_engine_streams(
        settings, tiny_bert_dir, tokenizer, tmp_path, monkeypatch, restore_torch_threads, streams, threads):
    from core import runtime
    from worker import serving

    model_dir = save_tiny_model("bert", {"s": ["a", "b", "c"]}, tiny_bert_dir, tokenizer, tmp_path / "m", seed=3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)  # a 4-core machine
    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(serving, "_threads_for_streams", [])
    runtime.configure(settings.replace(inference_streams=streams))  # None: the CPU's default, one per core
    try:
        predictor = serving.predictor_for(str(model_dir), False)
        assert predictor.engine.streams == (streams or 4)
        assert torch.get_num_threads() == threads
        expected = Predictor.load(model_dir).predict(TEXTS)
        in_loops: list[int] = []  # torch's threads as the engine's loop threads see them
        real_forward = predictor.forward

        def forward(rows):
            in_loops.append(torch.get_num_threads())
            return real_forward(rows)

        monkeypatch.setattr(predictor, "forward", forward)
        got = predictor.engine.predict(TEXTS)
        assert in_loops and set(in_loops) == {threads}
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        for g, e in zip(got, expected):
            assert g["scores"] == pytest.approx(e["scores"], abs=1e-5)
    finally:
        drop_predictor(model_dir)
