"""Cross-job dynamic batching: inference loops per loaded model (its streams), shared by every job in the worker
process.

The design of text-embeddings-inference's router queue and Triton's dynamic batcher, sized for a Celery worker
whose thread pool runs many classification jobs (and ``/predict`` calls) at once:

* a job thread calls :meth:`BatchingEngine.predict` (or :meth:`~BatchingEngine.submit`) with its inputs (texts, or
  sentence pairs): the model's backend (``ml.backend``) encodes them into rows in the caller's thread, queued as
  one *request*; the caller blocks on a future;
* ``streams`` loop threads per model (one on a GPU; on the CPU one per share of the cores, see
  :attr:`EngineOptions.streams`) each form a batch when they are free (continuous batching): first the queued
  *small* requests (interactive ``/predict`` calls, one-text jobs; whole requests, oldest first, up to a batch,
  and no more than an even share of the small rows waiting among the loops free at that moment, so free streams
  run them side by side), length-sorted and cut under ``max_batch_tokens`` / ``max_batch_size``; otherwise the
  next batch of a *pool* that holds up to ``POOL_ROWS`` rows of the oldest large request sorted by token length
  (little padding);
* the batch runs through the model's narrow backend (``backend.forward(rows)``; for text classification
  :meth:`ml.text_classification.Predictor.forward`);
* when only a few small requests are waiting the loop waits at most ``wait_ms`` for partners.

Because the next batch is chosen after every batch, a small request that arrives while a large job runs waits for
one batch, never for the large job's chunk.

Each row's output goes back to the request it came from, by position, so results never mix across jobs; rows of
different models never meet (one engine per model). An input that became several rows (``ml.backend.Encoded``:
windows, choices) gets its rows' outputs back together, in order, however they were batched. The engine knows
nothing of the task shape: rows are token-id lists (only their length matters here) and outputs are passed through.
(Text classification: sentence pairs and single texts may share a batch: a pair's row carries its token type ids
and a single text's row gets type 0 throughout, which is what the encoder assumes without token types.)
A request whose ``should_stop`` says so (its job was cancelled or taken over) is dropped with
:class:`RequestCancelled`; a batch that fails is re-run row by row so only the request that owns the failing
row gets the exception, never its batch partners. A batch that runs the device out of memory (CUDA OOM) is split
in halves and retried (:meth:`BatchingEngine._after_oom`), down to single rows, which are retried after a pause
(the memory may be held by a training on the same GPU): an OOM never fails a job while a smaller batch fits, and
the engine's token budget drops below the failed batch so later batches do not hit it again (it doubles back
towards the configured budget after every ``OOM_RECOVER_BATCHES`` batches without one).

Every batch that ran is reported to the functions in :data:`BATCH_OBSERVERS` (rows, real and padded tokens,
seconds): the worker turns them into metrics (``worker.telemetry``); ml itself records nothing.

:func:`token_budget_batches` (rows x longest row under a budget) is also what ``Predictor.predict`` and the training
loop cut their batches with.
"""
from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ml.backend import Backend, input_outputs, row_outputs, rows_of
from ml.device import is_out_of_memory, release_cached_memory, without_frame_locals

log = logging.getLogger(__name__)

SMALL_REQUEST_TEXTS = 8  # requests up to this many rows are served first (interactive traffic)
POOL_ROWS = 1024  # rows of a large request sorted together by length (less padding than batching in order)
IDLE_EXIT_S = 60.0  # an idle loop thread exits (and lets an evicted model be freed); the next request restarts it
OOM_ROW_RETRIES = 3  # one row that runs out of memory alone is retried this often, after OOM_RETRY_WAIT_S doubling
OOM_RETRY_WAIT_S = 0.5
OOM_RECOVER_BATCHES = 1000  # after this many batches without an OOM a lowered token budget doubles (up to its own)
# called after every batch that ran: observer(engine, rows, real_tokens, padded_tokens, seconds)
BATCH_OBSERVERS: list[Callable[..., None]] = []


class RequestCancelled(Exception):
    """The request's job was cancelled (or taken over) before all its rows ran."""


@dataclass(frozen=True)
class EngineOptions:
    """The engine's knobs (the worker passes the settings ``BATCH_WAIT_MS``, ``MAX_BATCH_TOKENS``,
    ``MAX_BATCH_SIZE``, ``INFERENCE_STREAMS``; unset, each is the device's default, from :meth:`for_device`; these
    class defaults serve an engine built without options: tests, scripts)."""

    # how long a less-than-full batch of small requests waits for partners; an engine built without options (tests,
    # scripts, ``Predictor.serve()``) keeps the GPU's 2 ms, the deployment's engines get the device's (for_device)
    wait_ms: float = 2.0
    max_batch_tokens: int = 8192  # rows x longest row (padded tokens) per forward pass
    max_batch_size: int = 64  # rows per forward pass
    # batches of one model that run at once, each in its own loop thread. A GPU runs one at a time (1). On the CPU
    # torch's intra-op threads stall on each other for the small batches of interactive traffic (a batch of 6 tweets
    # on 2 threads: 140 texts/s, 11.8 CPU-ms per text) while two single-threaded batches side by side run at the
    # cost of a large sorted batch (201 texts/s, 9.8 CPU-ms): the worker gives each stream its share of the cores
    # (``ml.device.configure_torch_threads(streams=...)``).
    streams: int = 1

    @classmethod
    def for_device(cls, device: str, *, wait_ms: float | None = None, max_batch_tokens: int | None = None,
                   max_batch_size: int | None = None, streams: int | None = None) -> "EngineOptions":
        """The options for a model served on ``device``: the knobs given, else the device's defaults
        (:data:`GPU_WAIT_MS`, :data:`GPU_BATCH_LIMITS` and one stream on CUDA; :data:`CPU_WAIT_MS`, the class's
        limits and :func:`cpu_streams` on the CPU)."""
        on_gpu = str(device).startswith("cuda")
        tokens, size = GPU_BATCH_LIMITS if on_gpu else (cls.max_batch_tokens, cls.max_batch_size)
        wait = (GPU_WAIT_MS if on_gpu else CPU_WAIT_MS) if wait_ms is None else wait_ms
        return cls(wait_ms=wait, max_batch_tokens=max_batch_tokens or tokens, max_batch_size=max_batch_size or size,
                   streams=streams or (1 if on_gpu else cpu_streams()))


MAX_CPU_STREAMS = 4  # beyond this, more cores go to each stream (a lone request's latency) rather than more streams


def cpu_streams() -> int:
    """The default number of streams on the CPU: one per available core up to :data:`MAX_CPU_STREAMS`; with more
    cores, as many as the cores split into evenly sized shares (16 cores: 4 streams of 4 threads; 6: 3 of 2)."""
    from ml.device import available_cpus

    cpus = available_cpus()
    per_stream = -(-cpus // MAX_CPU_STREAMS)
    return max(1, -(-cpus // per_stream))


# How long a less-than-full batch of small requests waits for partners, by device. A GPU's forward costs about the
# same for 1 row or 64, so 2 ms buys a bigger batch almost for free. On the CPU a forward costs per row, the streams
# run side by side, and the web and the /predict lane share the cores: a stream that waits for partners only idles.
# 16 /predict callers on 2 cores, 4 alternated rounds of 5 runs: ~5% more calls/s without the wait (bench/README.md),
# and a lone request no longer waits 2 ms.
CPU_WAIT_MS, GPU_WAIT_MS = 0.0, 2.0

# A GPU runs a batch of 256 short texts in about the time the CPU runs one text: bigger batches keep it busy. 32,768
# padded tokens of BERT-base in fp16 take well under 2 GB of activations (inference keeps one layer's at a time);
# a batch that still runs out of memory is split (BatchingEngine._run_batch).
GPU_BATCH_LIMITS = (32768, 256)


def token_budget_batches(order: list[int], lengths: list[int], max_tokens: int, max_size: int) -> list[list[int]]:
    """Cut ``order`` (decreasing length) into batches with rows x longest <= max_tokens (>= 1 row each)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1 > max_size or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class RequestFuture(Future):
    """A submitted request: resolves to one output per input (see ``ml.backend``); ``encoded`` is what the
    backend's ``encode`` returned for it, which ``backend.results`` reads the outputs back with."""

    def __init__(self, encoded: Any) -> None:
        super().__init__()
        self.encoded = encoded


@dataclass(eq=False)
class _Request:
    rows: list[Any]  # the backend's rows: token ids (a sentence pair's row also carries its token type ids)
    should_stop: Callable[[], bool] | None
    future: RequestFuture
    outputs: list = field(default_factory=list)  # per row: forward's output (e.g. {task: probs}), filled by the loop
    next_row: int = 0  # rows before this were handed to a window
    remaining: int = 0  # rows still waiting for their output

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.rows)
        self.remaining = len(self.rows)

    @property
    def small(self) -> bool:
        return len(self.rows) <= SMALL_REQUEST_TEXTS

    def stopped(self) -> bool:
        try:
            return bool(self.should_stop and self.should_stop())
        except Exception:  # noqa: BLE001 - a broken check must not take the loop down; treat as "go on"
            log.exception("should_stop() raised; continuing the request")
            return False


class BatchingEngine:
    """Batches the rows of every concurrent request for one loaded model. See the module docstring."""

    def __init__(
        self, backend: Backend, *, wait_ms: float = EngineOptions.wait_ms,
        max_batch_tokens: int = EngineOptions.max_batch_tokens, max_batch_size: int = EngineOptions.max_batch_size,
        streams: int = EngineOptions.streams,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1 or not 0 <= wait_ms < math.inf or streams < 1:
            raise ValueError("max_batch_tokens, max_batch_size and streams must be >= 1 and wait_ms a finite number "
                             ">= 0")
        self.backend = backend
        self.wait_s = wait_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.streams = streams
        self._queue: list[_Request] = []  # arrival order
        self._queued_rows = 0  # rows of queued requests not yet taken into a batch or the pool
        self._pool: list[tuple[_Request, int]] = []  # rows of one large request, longest first
        self._taken: dict[int, list[_Request]] = {}  # per loop thread: the requests of the batches it formed
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []  # the running loops, at most ``streams``
        self._free_loops = 0  # loops forming their next step (not running a batch): small work is shared by them
        self._closing = False  # the process is exiting: loops leave, queued work fails (_stop_loops_at_exit)
        self._counted = threading.Lock()  # the counters below are updated by every loop
        self._delivering = threading.Lock()  # rows' outputs handed to their requests (_deliver)
        # counters for /metrics-style introspection and tests
        self.batches_run = 0
        self.rows_run = 0
        self.oom_splits = 0  # batches split (or single rows retried) after running out of device memory
        self._token_budget = max_batch_tokens  # the configured budget; an OOM lowers max_batch_tokens for a while
        self._batches_since_oom = 0
        _ENGINES.add(self)

    # ---------------------------------------------------------------- callers

    @classmethod
    def with_options(cls, backend: Backend, options: EngineOptions) -> "BatchingEngine":
        """An engine for ``backend`` with the knobs of ``options``."""
        return cls(backend, wait_ms=options.wait_ms, max_batch_tokens=options.max_batch_tokens,
                   max_batch_size=options.max_batch_size, streams=options.streams)

    def submit(
        self, inputs: list[Any], pairs: list[str] | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> RequestFuture:
        """Queue ``inputs`` (texts; with ``pairs``: the sentence pairs ``(inputs[i], pairs[i])``); the future
        resolves to one output per input, in order (for text classification: a ``{task: probabilities}`` dict), and
        :meth:`results` (``backend.results``) turns them into results."""
        return self.enqueue([(self.encode(inputs, pairs), should_stop)])[0]

    def encode(self, inputs: list[Any], pairs: list[str] | None = None) -> Any:
        """The backend's encoding of one request's inputs, in the caller's thread (raises what the backend raises,
        such as :class:`ml.backend.InputError`)."""
        return self.backend.encode(inputs) if pairs is None else self.backend.encode(inputs, pairs=pairs)

    def enqueue(self, requests: list[tuple[Any, Callable[[], bool] | None]]) -> list[RequestFuture]:
        """Queue encoded requests ``(encoded, should_stop)`` together, one future each: the loop sees all their
        rows at once. A caller holding many small requests (the /predict lane's batch of jobs) gets them into one
        forward pass, instead of the first ones running alone when the partner wait ends while the rest are still
        being encoded."""
        futures, queued = [], []
        for encoded, should_stop in requests:
            request = _Request(rows_of(encoded), should_stop, RequestFuture(encoded))
            futures.append(request.future)
            if request.rows:
                queued.append(request)
            else:
                request.future.set_result(input_outputs(encoded, []))
        if queued:
            with self._cond:
                self._queue.extend(queued)
                self._queued_rows += sum(len(request.rows) for request in queued)
                self._threads = [thread for thread in self._threads if thread.is_alive()]
                while len(self._threads) < self.streams:
                    thread = threading.Thread(target=self._loop, name=f"batching-engine-{len(self._threads)}",
                                              daemon=True)
                    self._threads.append(thread)
                    thread.start()
                self._cond.notify()
        return futures

    def results(self, future: RequestFuture, timeout: float | None = None) -> list[Any]:
        """Wait for a submitted request and return its results (``backend.results``), one per input."""
        return self.backend.results(future.result(timeout), future.encoded)

    def predict(
        self, inputs: list[Any], pairs: list[str] | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> list[Any]:
        """Results for ``inputs`` (or the pairs ``(inputs[i], pairs[i])``), batched with whatever else is in
        flight; blocks until they are done."""
        return self.results(self.submit(inputs, pairs, should_stop=should_stop))

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> None:
        while True:
            try:
                batches = self._next_batches()
            except BaseException:  # noqa: BLE001 - fail what is waiting rather than strand it with a dead loop
                log.exception("batching loop could not form a batch")
                self._fail_everything(RuntimeError("the inference loop failed"))
                continue
            if batches is None:
                return
            for batch in batches:
                try:
                    self._run_batch(batch)
                except BaseException:  # noqa: BLE001 - never leave a caller waiting forever
                    log.exception("batching loop failed")
                    for request, _ in batch:
                        if not request.future.done():
                            request.future.set_exception(RuntimeError("the inference loop failed"))

    def _next_batches(self) -> list[list[tuple[_Request, int]]] | None:
        """The next step's batches: queued small requests first, else the next batch of the sorted pool.

        Decided batch by batch, so a small request that arrives while a large job runs waits for one batch at
        most, not for the large job's whole chunk.
        """
        me = threading.get_ident()
        with self._cond:
            self._taken.pop(me, None)  # the previous step's batches were handed to this loop and ran
            self._free_loops += 1
            try:
                return self._form_step(me)
            finally:
                self._free_loops -= 1

    def _form_step(self, me: int) -> list[list[tuple[_Request, int]]] | None:
        """:meth:`_next_batches` under ``_cond``."""
        if self._closing:  # the process is exiting: what waits is failed, and the loop leaves after its last batch
            self._fail_everything(RuntimeError("the inference loop stopped: the process is exiting"))
            return self._exit_loop()
        idle_until = time.monotonic() + IDLE_EXIT_S
        while not self._queued_rows and not self._pool:
            # the queue is looked at again after every wake-up, a timed-out one included: a request queued
            # while the wait was timing out (its notify spent on this loop) is never left behind by an exit
            if (left := idle_until - time.monotonic()) <= 0:
                return self._exit_loop()
            self._cond.wait(timeout=left)
        if not self._pool and self._queued_rows < self.max_batch_size and all(r.small for r in self._queue):
            # dynamic batching: with less than a full batch waiting, give partners a moment to arrive
            deadline = time.monotonic() + self.wait_s
            while self._queued_rows < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(timeout=left)
        self._drop_stopped()
        small = self._take_small(share=self._free_loops)
        self._taken[me] = [request for request, _ in small]  # until they ran (see _fail_everything)
        if small:
            lengths = [len(request.rows[i]) for request, i in small]
            order = sorted(range(len(small)), key=lengths.__getitem__, reverse=True)
            batches = [[small[k] for k in batch] for batch in
                       token_budget_batches(order, lengths, self.max_batch_tokens, self.max_batch_size)]
        else:
            if not self._pool:
                self._refill_pool()
            batches = [self._pop_pool_batch()] if self._pool else []
        if self._queued_rows or self._pool:
            self._cond.notify()  # work is left: wake another loop (one enqueue wakes one loop only)
        return batches

    def _exit_loop(self) -> None:
        """This loop thread leaves (holds ``_cond``): the next enqueue starts a new one."""
        self._threads = [t for t in self._threads if t is not threading.current_thread()]

    def _leave(self, timeout: float) -> None:
        """The process is exiting: every loop leaves (the idle ones at once, the busy ones after their batch; what
        is still queued fails), waited for up to ``timeout`` seconds. The engine serves nothing afterwards."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _fail_everything(self, error: BaseException) -> None:
        """Fail every queued or pooled request and those this loop was forming a batch of (a broken loop must not
        leave callers waiting forever); other loops' running batches finish."""
        with self._cond:
            requests = {r for r in self._queue} | {r for r, _ in self._pool} | set(
                self._taken.pop(threading.get_ident(), []))
            self._queue, self._pool, self._queued_rows = [], [], 0
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)

    def _drop_stopped(self) -> None:
        """Fail and forget requests whose job stopped (holds ``_cond``): their rows never reach the model."""
        for request in {r for r in self._queue} | {r for r, _ in self._pool}:
            if not request.future.done() and request.stopped():
                self._queued_rows -= len(request.rows) - request.next_row
                request.next_row = len(request.rows)
                request.future.set_exception(RequestCancelled("the job was cancelled"))
        self._queue = [r for r in self._queue if r.next_row < len(r.rows)]
        self._pool = [(r, i) for r, i in self._pool if not r.future.done()]

    def _take_small(self, share: int = 1) -> list[tuple[_Request, int]]:
        """Whole small requests, in arrival order, up to one batch of rows, and with ``share`` loops free to run
        batches (this one included) up to an even share of the small rows waiting, so that the free streams run
        them side by side instead of one stream running them all while the others wait (holds ``_cond``)."""
        waiting = sum(len(request.rows) for request in self._queue if request.small)  # taken whole: none begun
        limit = min(self.max_batch_size, -(-waiting // max(1, share)))
        taken: list[tuple[_Request, int]] = []
        for request in self._queue:
            if not request.small:
                continue
            if taken and len(taken) + len(request.rows) > limit:
                break
            taken.extend((request, i) for i in range(len(request.rows)))
            request.next_row = len(request.rows)
            self._queued_rows -= len(request.rows)
        if taken:
            self._queue = [r for r in self._queue if r.next_row < len(r.rows)]
        return taken

    def _refill_pool(self) -> None:
        """Up to POOL_ROWS rows of the oldest large request, longest first (holds ``_cond``)."""
        request = next((r for r in self._queue if not r.small), None)
        if request is None:
            return
        take = min(POOL_ROWS, len(request.rows) - request.next_row)
        rows = range(request.next_row, request.next_row + take)
        request.next_row += take
        self._queued_rows -= take
        self._pool = sorted(((request, i) for i in rows), key=lambda item: len(item[0].rows[item[1]]), reverse=True)
        self._queue = [r for r in self._queue if r.next_row < len(r.rows)]

    def _pop_pool_batch(self) -> list[tuple[_Request, int]]:
        """The pool's longest rows, as many as fit the token budget and the batch size (holds ``_cond``)."""
        longest = len(self._pool[0][0].rows[self._pool[0][1]])
        size = max(1, min(self.max_batch_size, self.max_batch_tokens // max(1, longest), len(self._pool)))
        batch, self._pool = self._pool[:size], self._pool[size:]
        return batch

    def _run_batch(self, items: list[tuple[_Request, int]]) -> None:
        rows = [request.rows[i] for request, i in items]
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            out = self.backend.forward(rows)
        except Exception as exc:  # noqa: BLE001
            failure = without_frame_locals(exc)  # kept past the block, without the failed pass's tensors
        if failure is not None:  # retried out here, where the failed pass's frames are gone
            if is_out_of_memory(failure):
                self._after_oom(items, failure)
            else:
                self._after_failure(items, failure)
            return
        outputs = row_outputs(out, len(items))  # a malformed answer fails the whole batch (see _loop)
        self._count(len(items))
        self._observe(rows, time.perf_counter() - started)
        self._deliver(items, outputs)
        if self.max_batch_tokens < self._token_budget:  # lowered after an OOM: win it back slowly
            with self._counted:
                self._batches_since_oom += 1
                if self._batches_since_oom >= OOM_RECOVER_BATCHES:
                    self.max_batch_tokens = min(self._token_budget, self.max_batch_tokens * 2)
                    self._batches_since_oom = 0

    def _after_failure(self, items: list[tuple[_Request, int]], error: Exception) -> None:
        """A batch failed (not for memory): a lone row's request gets the error; a batch is re-run row by row, so
        that only the request owning the failing row gets it, never its batch partners."""
        if len(items) == 1:
            request = items[0][0]
            if not request.future.done():
                request.future.set_exception(error)
            return
        log.warning("a batch of %d failed (%s); re-running its rows one by one", len(items), error)
        for item in items:
            if not item[0].future.done():
                self._run_batch([item])

    def _count(self, rows: int) -> None:
        with self._counted:
            self.batches_run += 1
            self.rows_run += rows

    def _after_oom(self, items: list[tuple[_Request, int]], error: BaseException) -> None:
        """A batch ran the device out of memory: free the allocator's cache, lower the token budget below this
        batch's padded size, and run the batch again in two halves (each halved again if it still does not fit);
        a single row is retried ``OOM_ROW_RETRIES`` times after a growing pause before its request fails."""
        release_cached_memory()
        with self._counted:
            self.oom_splits += 1
        items = [item for item in items if not item[0].future.done()]
        if not items:
            return
        padded = len(items) * max(len(request.rows[i]) for request, i in items)
        if len(items) > 1:
            budget = max(1, padded // 2)
            if budget < self.max_batch_tokens:
                self.max_batch_tokens = budget  # later batches are cut smaller instead of failing again
            self._batches_since_oom = 0
            log.warning("a batch of %d rows (%d padded tokens) ran out of device memory; retrying it in halves, "
                        "token budget now %d", len(items), padded, self.max_batch_tokens)
            half = len(items) // 2
            for part in (items[:half], items[half:]):
                self._run_batch(part)
            return
        request, i = items[0]
        for attempt in range(OOM_ROW_RETRIES):
            if request.stopped():
                request.future.set_exception(RequestCancelled("the job was cancelled"))
                return
            time.sleep(OOM_RETRY_WAIT_S * 2 ** attempt)
            release_cached_memory()
            started = time.perf_counter()
            try:
                out = self.backend.forward([request.rows[i]])
            except Exception as exc:  # noqa: BLE001
                error = without_frame_locals(exc)  # kept for the request, without the failed pass's tensors
                if not is_out_of_memory(exc):
                    break
                continue
            self._deliver([(request, i)], row_outputs(out, 1))
            self._count(1)
            self._observe([request.rows[i]], time.perf_counter() - started)
            return
        log.error("one row of %d tokens does not fit the device's memory: %s", len(request.rows[i]), error)
        if not request.future.done():
            request.future.set_exception(error)

    def _deliver(self, items: list[tuple[_Request, int]], outputs: list[Any]) -> None:
        """Hand each row's output to its request; a request whose last row this was is resolved. Under a lock: two
        loops may deliver rows of one large request at once (a lost ``remaining`` decrement would strand it)."""
        with self._delivering:
            for (request, i), output in zip(items, outputs):
                request.outputs[i] = output
                request.remaining -= 1
                if request.remaining == 0 and not request.future.done():
                    try:
                        request.future.set_result(input_outputs(request.future.encoded, request.outputs))
                    except InvalidStateError:  # cancelled by another loop meanwhile: it has its answer
                        pass

    def _observe(self, rows: list[Any], seconds: float) -> None:
        """Report a batch that ran to :data:`BATCH_OBSERVERS` (a failing observer is logged, never raised)."""
        if not BATCH_OBSERVERS:
            return
        lengths = [len(row) for row in rows]
        for observer in list(BATCH_OBSERVERS):
            try:
                observer(self, len(rows), sum(lengths), len(rows) * max(lengths), seconds)
            except Exception:  # noqa: BLE001 - metrics must never fail a batch
                log.exception("a batch observer failed")


class Served:
    """A backend's own engine: mixed into each backend class, which sets ``self._engine = None``,
    ``self._engine_lock = threading.Lock()``, ``self._lock = threading.Lock()`` and ``self.device`` in its
    ``__init__``."""

    def forward_guard(self):
        """What the backend's forward pass runs under: on a GPU its lock (one batch at a time: several would only
        queue on the device and add up their memory); on the CPU nothing, so the engine's streams run side by side
        (:attr:`EngineOptions.streams`; a model in eval mode without gradients is safe to run from several
        threads)."""
        return self._lock if str(self.device).startswith("cuda") else nullcontext()

    def serve(self, options: EngineOptions | None = None) -> BatchingEngine:
        """This model's cross-job batching engine, built on first use with ``options`` (default:
        ``EngineOptions()``); later calls return the same engine whatever their options, as one loaded model has
        one engine per process. The predictor cache (``ml.inference.get_predictor``) calls it with the worker's
        options when it hands the backend out."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = BatchingEngine.with_options(self, options or EngineOptions())
        return self._engine

    @property
    def engine(self) -> BatchingEngine:
        """This model's cross-job batching engine (see :meth:`serve`)."""
        return self.serve()


_ENGINES: "weakref.WeakSet[BatchingEngine]" = weakref.WeakSet()  # every engine of this process
EXIT_WAIT_S = 10.0  # how long an exiting process waits for loops still running a batch


@atexit.register
def _stop_loops_at_exit() -> None:
    """Let the loop threads leave before the interpreter finalizes. They are daemon threads, and one still inside
    a torch call when it wants the GIL back during finalization is ended by a forced unwind through torch's C++
    frames, which aborts the process ("terminate called without an active exception", exit status 134)."""
    deadline = time.monotonic() + EXIT_WAIT_S
    for engine in list(_ENGINES):
        engine._leave(max(0.0, deadline - time.monotonic()))
