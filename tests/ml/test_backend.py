"""The engine's backend interface (ml.backend) with a fake backend whose inputs become several rows each.

A token-classification backend splits a long text into windows, a question-answering one a context into windows,
a multiple-choice one a question into (question, choice) pairs: one input, several rows, batched freely with other
requests' rows and regrouped per input before ``results``. The fake does the same with no model: an input is a
list of words, each *window* of up to ``WIDTH`` words is one row (its word ids), and a row's output is its word
ids doubled. No torch needed.
"""
from __future__ import annotations

import threading

import pytest

from ml import batching
from ml.backend import Backend, Encoded, input_outputs, row_outputs
from ml.batching import BatchingEngine, RequestCancelled

WIDTH = 2  # words per window
WAIT_S = 30


class WindowBackend:
    """Fake backend: each input (a list of words) becomes ceil(len / WIDTH) rows; results rebuild the words."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.hold: threading.Event | None = None  # while set up, the first forward waits for it
        self.entered = threading.Event()

    def encode(self, inputs: list[list[str]]) -> Encoded:
        rows, counts = [], []
        for words in inputs:
            windows = [words[k:k + WIDTH] for k in range(0, len(words), WIDTH)]
            rows.extend([[_word_id(w) for w in window] for window in windows])
            counts.append(len(windows))
        return Encoded(rows, counts, context=[list(words) for words in inputs])

    def forward(self, rows: list[list[int]]) -> list[list[int]]:
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.entered.set()
            assert hold.wait(WAIT_S)
        self.batches.append([tuple(r) for r in rows])
        return [[2 * i for i in row] for row in rows]

    def results(self, outputs: list[list[list[int]]], encoded: Encoded) -> list[dict]:
        out = []
        for words, windows in zip(encoded.context, outputs):
            ids = [i // 2 for window in windows for i in window]  # the windows in order, as the input was split
            out.append({"words": [_WORDS[i] for i in ids], "windows": len(windows), "source": words})
        return out


_WORDS: list[str] = []


def _word_id(word: str) -> int:
    if word not in _WORDS:
        _WORDS.append(word)
    return _WORDS.index(word)


@pytest.fixture(autouse=True)
def short_idle(monkeypatch):
    monkeypatch.setattr(batching, "IDLE_EXIT_S", 1.0)


def test_the_fake_is_a_backend():
    assert isinstance(WindowBackend(), Backend)


def test_an_input_of_three_rows_is_batched_with_other_requests_and_regrouped():
    backend = WindowBackend()
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=64)
    release = backend.hold = threading.Event()
    blocker = engine.submit([["blocker"]])
    assert backend.entered.wait(WAIT_S)  # the loop is inside the blocker's batch: the next requests queue up
    three = [["alpha", "beta", "gamma", "delta", "epsilon"], ["zeta"]]  # 3 rows + 1 row
    other = [["eta", "theta"], ["iota", "kappa", "lambda"]]  # 1 row + 2 rows
    f_three, f_other = engine.submit(three), engine.submit(other)
    release.set()
    results_three, results_other = engine.results(f_three, WAIT_S), engine.results(f_other, WAIT_S)
    engine.results(blocker, WAIT_S)

    assert results_three == [{"words": three[0], "windows": 3, "source": three[0]},
                             {"words": ["zeta"], "windows": 1, "source": ["zeta"]}]
    assert results_other == [{"words": other[0], "windows": 1, "source": other[0]},
                             {"words": other[1], "windows": 2, "source": other[1]}]
    # the seven rows of both requests ran in one batch (length-sorted, so the windows were not kept together)
    (shared,) = [batch for batch in backend.batches if len(batch) > 1]
    assert len(shared) == 7
    assert [len(row) for row in shared] == sorted((len(row) for row in shared), reverse=True)
    # the future itself holds the per-input outputs: a list of row outputs per input
    assert [len(windows) for windows in f_three.result()] == [3, 1]


def test_large_requests_of_multi_row_inputs_go_through_the_sorted_pool():
    backend = WindowBackend()
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=5, max_batch_tokens=8)
    inputs = [[f"w{i}-{k}" for k in range(i % 7)] for i in range(60)]  # 0..6 words: 0..4 rows each
    results = engine.predict(inputs)
    assert [r["words"] for r in results] == inputs
    assert [r["windows"] for r in results] == [-(-len(words) // WIDTH) for words in inputs]
    assert all(len(batch) <= 5 and len(batch) * max(map(len, batch)) <= 8 for batch in backend.batches)


def test_cancelled_multi_row_request_gets_no_results():
    backend = WindowBackend()
    engine = BatchingEngine(backend, wait_ms=0)
    with pytest.raises(RequestCancelled):
        engine.results(engine.submit([["a", "b", "c"]], should_stop=lambda: True), WAIT_S)
    assert engine.predict([]) == []


def test_encoded_checks_its_counts_and_regroups():
    with pytest.raises(ValueError):
        Encoded([[1], [2]], [1])
    encoded = Encoded([[1], [2], [3]], [0, 2, 1])
    assert input_outputs(encoded, ["a", "b", "c"]) == [[], ["a", "b"], ["c"]]
    assert input_outputs([[1], [2]], ["a", "b"]) == ["a", "b"]  # plain rows: one output per input


def test_row_outputs_accepts_sequences_and_columns_and_refuses_a_wrong_count():
    assert row_outputs([1, 2], 2) == [1, 2]
    assert row_outputs({"s": [[0.1], [0.2]], "t": [[1.0], [2.0]]}, 2) == [{"s": [0.1], "t": [1.0]},
                                                                           {"s": [0.2], "t": [2.0]}]
    with pytest.raises(ValueError):
        row_outputs([1], 2)
    with pytest.raises(ValueError):
        row_outputs({"s": [[0.1]]}, 2)


def test_engine_option_defaults_are_the_devices_unless_the_settings_say():
    """ml reads no settings: BATCH_WAIT_MS, MAX_BATCH_TOKENS and MAX_BATCH_SIZE default to None (unset), which means
    the device's: no partner wait on the CPU (its streams run side by side), 2 ms on a GPU."""
    from core.config import Settings
    from ml.batching import CPU_WAIT_MS, GPU_WAIT_MS, EngineOptions

    assert (Settings.batch_wait_ms, Settings.max_batch_tokens, Settings.max_batch_size) == (None, None, None)
    cpu = EngineOptions.for_device("cpu", wait_ms=Settings.batch_wait_ms)
    assert (cpu.wait_ms, cpu.max_batch_tokens, cpu.max_batch_size) == (CPU_WAIT_MS, 8192, 64)
    assert EngineOptions.for_device("cuda:0", wait_ms=Settings.batch_wait_ms).wait_ms == GPU_WAIT_MS
    assert (CPU_WAIT_MS, GPU_WAIT_MS) == (0.0, 2.0)
    for device in ("cpu", "cuda"):
        chosen = Settings.from_env({"BATCH_WAIT_MS": "5"}).batch_wait_ms
        assert EngineOptions.for_device(device, wait_ms=chosen).wait_ms == 5.0
    assert EngineOptions.for_device("cuda", wait_ms=0.0).wait_ms == 0.0  # 0 is a choice, not "unset"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "soon"])
def test_a_batch_wait_that_is_not_a_finite_number_of_ms_is_refused_at_start(value):
    from core.config import Settings

    with pytest.raises(ValueError, match="BATCH_WAIT_MS"):
        Settings.from_env({"BATCH_WAIT_MS": value})


def test_batch_limits_default_to_the_devices_and_settings_override_them():
    from core.config import Settings
    from ml.batching import GPU_BATCH_LIMITS, EngineOptions

    gpu = EngineOptions.for_device("cuda")
    assert (gpu.max_batch_tokens, gpu.max_batch_size) == GPU_BATCH_LIMITS
    assert GPU_BATCH_LIMITS[0] > EngineOptions.max_batch_tokens and GPU_BATCH_LIMITS[1] > EngineOptions.max_batch_size
    assert EngineOptions.for_device("cuda:1").max_batch_size == GPU_BATCH_LIMITS[1]
    settings = Settings.from_env({"MAX_BATCH_TOKENS": "4000", "MAX_BATCH_SIZE": "16"})
    chosen = EngineOptions.for_device("cuda", max_batch_tokens=settings.max_batch_tokens,
                                      max_batch_size=settings.max_batch_size)
    assert (chosen.max_batch_tokens, chosen.max_batch_size) == (4000, 16)
    only_size = EngineOptions.for_device("cuda", max_batch_size=32)
    assert (only_size.max_batch_tokens, only_size.max_batch_size) == (GPU_BATCH_LIMITS[0], 32)
    with pytest.raises(ValueError, match="MAX_BATCH_TOKENS"):
        Settings.from_env({"MAX_BATCH_TOKENS": "0"})


def test_inference_streams_default_to_the_devices_and_settings_override_them(monkeypatch):
    """One stream on a GPU; on the CPU one per core up to MAX_CPU_STREAMS, then evenly sized shares of the cores;
    INFERENCE_STREAMS overrides both and must be >= 1."""
    import os

    from core.config import Settings
    from ml.batching import EngineOptions

    assert EngineOptions().streams == 1  # an engine built without options (tests, scripts): one loop
    assert EngineOptions.for_device("cuda").streams == 1
    for cpus, streams in ((1, 1), (2, 2), (3, 3), (4, 4), (6, 3), (8, 4), (16, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        assert batching.cpu_streams() == streams, cpus
        assert EngineOptions.for_device("cpu").streams == streams, cpus
    assert EngineOptions.for_device("cpu", streams=3).streams == 3
    assert EngineOptions.for_device("cuda", streams=2).streams == 2
    assert Settings.inference_streams is None and Settings.from_env({"INFERENCE_STREAMS": "2"}).inference_streams == 2
    with pytest.raises(ValueError, match="INFERENCE_STREAMS"):
        Settings.from_env({"INFERENCE_STREAMS": "0"})


def test_the_forward_pass_is_exclusive_on_a_gpu_only():
    """Several streams may run a CPU model at once; a GPU runs one batch at a time (its backend's lock)."""
    from contextlib import nullcontext

    from ml.batching import Served

    class Model(Served):
        def __init__(self, device: str) -> None:
            self.device, self._lock = device, threading.Lock()

    assert isinstance(Model("cpu").forward_guard(), nullcontext)
    gpu = Model("cuda:0")
    with gpu.forward_guard():
        assert gpu._lock.locked()
    assert not gpu._lock.locked()


@pytest.mark.parametrize("wait_ms", [-1.0, float("nan"), float("inf")])
def test_an_engine_refuses_a_wait_that_is_not_a_finite_number_of_ms(wait_ms):
    from ml.batching import BatchingEngine

    with pytest.raises(ValueError, match="wait_ms"):
        BatchingEngine(object(), wait_ms=wait_ms)


@pytest.mark.parametrize("device,environ,expected", [
    ("cpu", {}, 0.0), ("cuda", {}, 2.0), ("cuda:1", {}, 2.0),
    ("cpu", {"BATCH_WAIT_MS": "3"}, 3.0), ("cuda", {"BATCH_WAIT_MS": "0"}, 0.0),
])
def test_the_workers_engines_wait_as_the_device_says_unless_batch_wait_ms_is_set(device, environ, expected,
                                                                                 monkeypatch):
    from core import runtime
    from core.config import Settings
    from worker import serving

    monkeypatch.setattr(runtime, "_settings", Settings.from_env(environ))
    assert serving.engine_options(device).wait_ms == expected
