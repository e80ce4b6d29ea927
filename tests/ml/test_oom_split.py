"""CUDA out-of-memory in an inference batch: the engine splits the batch and retries, the request never fails for it.

The backend is a fake whose ``forward`` raises ``torch.cuda.OutOfMemoryError`` (the real exception class, which
exists without CUDA) whenever a batch has more than ``fits`` rows or padded tokens: no GPU is needed to prove it.
"""
from __future__ import annotations

import threading

import pytest
import torch

from ml import batching
from ml.batching import BatchingEngine
from ml.device import is_out_of_memory

WAIT_S = 30


class TightMemory:
    """Fake backend: one row per text (its length in tokens), outputs echo the row; a batch over ``fits_rows`` rows
    or ``fits_tokens`` padded tokens raises CUDA OOM (``always_oom``: rows of that length never fit)."""

    def __init__(self, fits_rows: int = 4, fits_tokens: int = 10**9, always_oom: int | None = None) -> None:
        self.fits_rows, self.fits_tokens, self.always_oom = fits_rows, fits_tokens, always_oom
        self.attempts: list[int] = []  # rows per forward call, failed ones included
        self.ran: list[int] = []  # rows per forward call that succeeded
        self.lock = threading.Lock()

    def encode(self, inputs: list[str]) -> list[list[int]]:
        return [[len(text)] * len(text) for text in inputs]

    def forward(self, rows: list[list[int]]) -> list[int]:
        with self.lock:
            self.attempts.append(len(rows))
        padded = len(rows) * max(map(len, rows))
        if len(rows) > self.fits_rows or padded > self.fits_tokens or (
                self.always_oom is not None and any(len(r) == self.always_oom for r in rows)):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        with self.lock:
            self.ran.append(len(rows))
        return [row[0] for row in rows]

    def results(self, outputs: list[int], encoded=None) -> list[int]:
        return list(outputs)


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(batching, "IDLE_EXIT_S", 1.0)
    monkeypatch.setattr(batching, "OOM_RETRY_WAIT_S", 0.01)


def test_oom_is_told_from_other_errors():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert not is_out_of_memory(RuntimeError("index out of range"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only the runtime's own errors


def test_a_batch_that_runs_out_of_memory_is_split_and_every_row_answered():
    backend = TightMemory(fits_rows=5)
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=64)
    texts = ["x" * (1 + k % 7) for k in range(40)]  # one large request: batches of up to 64 rows
    assert engine.predict(texts) == [len(t) for t in texts]
    assert max(backend.ran) <= 5 and sum(backend.ran) == 40  # every row ran exactly once
    assert engine.oom_splits >= 1
    assert engine.rows_run == 40


def test_the_token_budget_drops_after_an_oom_so_later_batches_fit():
    backend = TightMemory(fits_rows=10**6, fits_tokens=64)
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=64, max_batch_tokens=8192)
    texts = ["y" * 8] * 200
    assert engine.predict(texts) == [8] * 200
    assert engine.max_batch_tokens <= 64  # learnt from the failures
    failures_before = len(backend.attempts) - len(backend.ran)
    assert engine.predict(texts) == [8] * 200
    assert len(backend.attempts) - len(backend.ran) == failures_before  # no more OOMs the second time


def test_a_lowered_budget_is_won_back_after_batches_without_oom(monkeypatch):
    monkeypatch.setattr(batching, "OOM_RECOVER_BATCHES", 3)
    backend = TightMemory(fits_rows=10**6, fits_tokens=64)
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=64, max_batch_tokens=1024)
    engine.predict(["y" * 8] * 64)
    lowered = engine.max_batch_tokens
    assert lowered <= 64
    backend.fits_tokens = 10**9  # the memory was freed (the training on the same GPU ended)
    for _ in range(3 * 6):
        engine.predict(["y" * 8] * 8)
    assert engine.max_batch_tokens == 1024  # doubled back, never above the configured budget


def test_concurrent_small_requests_are_all_answered_through_an_oom():
    backend = TightMemory(fits_rows=2)
    engine = BatchingEngine(backend, wait_ms=20, max_batch_size=64)
    futures = [engine.submit(["z" * (1 + k % 5)]) for k in range(30)]
    assert [engine.results(f, timeout=WAIT_S) for f in futures] == [[1 + k % 5] for k in range(30)]
    assert max(backend.ran) <= 2


def test_a_single_row_that_never_fits_fails_only_its_own_request_with_the_oom():
    backend = TightMemory(fits_rows=64, always_oom=9)
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=64)
    fine = engine.submit(["a" * 3] * 20)
    doomed = engine.submit(["b" * 9, "c" * 2])
    assert engine.results(fine, timeout=WAIT_S) == [3] * 20
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.results(doomed, timeout=WAIT_S)
    assert backend.attempts.count(1) >= 1 + batching.OOM_ROW_RETRIES  # retried alone before giving up


def test_a_row_that_fits_after_memory_is_freed_succeeds():
    """A single row that OOMs once (another process held the memory) succeeds on its retry."""
    backend = TightMemory(fits_rows=64)
    calls = {"n": 0}
    forward = backend.forward

    def flaky(rows):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return forward(rows)

    backend.forward = flaky
    engine = BatchingEngine(backend, wait_ms=0)
    assert engine.predict(["q" * 4]) == [4]
    assert engine.oom_splits == 1


def test_other_errors_still_fail_only_the_owning_request():
    """Not an OOM: the existing row-by-row isolation, no split and no retry loop."""

    class Broken(TightMemory):
        def forward(self, rows):
            if any(len(r) == 5 for r in rows):
                raise ValueError("bad row")
            return super().forward(rows)

    engine = BatchingEngine(Broken(fits_rows=64), wait_ms=0)
    assert engine.predict(["ok"]) == [2]
    with pytest.raises(ValueError):
        engine.predict(["fiver", "ok"])
    assert engine.oom_splits == 0


def test_batches_are_reported_to_observers(monkeypatch):
    seen = []
    monkeypatch.setattr(batching, "BATCH_OBSERVERS", [lambda *args: seen.append(args[1:4])])
    engine = BatchingEngine(TightMemory(fits_rows=64), wait_ms=0)
    engine.predict(["aaa", "a"])
    assert seen == [(2, 4, 6)]  # rows, real tokens, padded tokens (2 rows x 3)


def test_the_failed_pass_s_memory_is_released_before_any_retry():
    """What the failed forward pass held (its activations, here a stand-in object in one of its frames) is freed
    before the halves, and a lone row's later tries, run: the retry happens outside the ``except`` block and the
    error kept for the request no longer holds the pass's frames."""
    import weakref

    class Activations:
        pass

    held: list[weakref.ref] = []
    alive_at_retry: list[bool] = []
    backend = TightMemory(fits_rows=2, always_oom=9)

    def forward(rows):
        alive_at_retry.append(any(ref() is not None for ref in held))
        activations = Activations()  # a local of the failing frame, as a forward's tensors are
        held.append(weakref.ref(activations))
        return TightMemory.forward(backend, rows)

    backend.forward = forward
    engine = BatchingEngine(backend, wait_ms=0, max_batch_size=64)
    assert engine.predict(["x" * 3] * 8) == [3] * 8  # 8 rows -> halves -> quarters: several failed passes
    doomed = engine.submit(["y" * 9])
    with pytest.raises(torch.cuda.OutOfMemoryError) as failure:
        engine.results(doomed, timeout=WAIT_S)
    assert len(alive_at_retry) > 4 and not any(alive_at_retry)
    assert all(ref() is None for ref in held)  # the error the request got holds none of it either...
    assert failure.value.__traceback__ is not None  # ... and still says where it came from
