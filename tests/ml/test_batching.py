"""The cross-job batching engine (ml.batching) on tiny saved models.

Every test compares the engine's answers with ``Predictor.predict`` of the same texts alone (no engine), and
records what the engine handed to the model's ``forward`` to check how requests were batched. Tests that depend
on an ordering hold the loop thread inside ``forward`` (see :class:`Recorder`) so they need no timing.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future

import pytest

from ml import batching
from ml.batching import BatchingEngine, RequestCancelled
from ml.inference import Predictor
from tests.factories import save_tiny_model

WORDS = ("flight", "delay", "bag", "crew", "great", "awful", "seat", "gate", "pilot", "coffee", "late", "thanks",
         "never", "again", "lovely", "service", "the", "a", "was", "my", "on", "time", "lost", "refund")
POISON = "zebra"  # a single wordpiece never used by the random texts above
WAIT_S = 30  # generous limits for joins and futures: only reached when something hangs


@pytest.fixture(scope="module")
def model_dirs(tiny_bert_dir, tokenizer, tmp_path_factory):
    base = tmp_path_factory.mktemp("batching-models")
    return {
        "single": save_tiny_model("bert", {"s": ["a", "b", "c"]}, tiny_bert_dir, tokenizer, base / "single", seed=1),
        "multi": save_tiny_model("multitask", {"s": ["a", "b"], "t": ["x", "y", "z"]}, tiny_bert_dir, tokenizer,
                               base / "multi", seed=2),
    }


@pytest.fixture(scope="module")
def reference(model_dirs):
    """Predictors used only for the expected answers (never wrapped, never behind an engine)."""
    return {name: Predictor.load(path) for name, path in model_dirs.items()}


@pytest.fixture
def served(model_dirs):
    """Fresh predictors for the engines of one test (their ``forward`` may be wrapped)."""
    return {name: Predictor.load(path) for name, path in model_dirs.items()}


@pytest.fixture(autouse=True)
def short_idle(monkeypatch):
    # every engine a test starts lets its loop thread go soon after the test
    monkeypatch.setattr(batching, "IDLE_EXIT_S", 1.0)


class Hold:
    """One armed stop inside ``forward``: the loop thread sets ``entered`` and waits for ``release``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


class Recorder:
    """Wraps a predictor's ``forward``: records each batch (token-id rows), can hold the loop thread inside a
    batch (:meth:`arm`), and can raise for batches that contain a poison token."""

    def __init__(self, predictor: Predictor, monkeypatch, *, poison_id: int | None = None) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.failed: list[list[tuple[int, ...]]] = []
        self.threads: set[int] = set()  # the loop threads that ran a batch
        self.poison_id = poison_id
        self._holds: deque[Hold] = deque()
        self._real = predictor.forward
        monkeypatch.setattr(predictor, "forward", self._forward)

    def _forward(self, rows):
        self.threads.add(threading.get_ident())
        rows_t = [tuple(r) for r in rows]
        if self._holds:
            hold = self._holds.popleft()
            hold.entered.set()
            assert hold.release.wait(WAIT_S), "the test never released the loop"
        if self.poison_id is not None and any(self.poison_id in r for r in rows_t):
            self.failed.append(rows_t)
            raise ValueError("poisoned row")
        self.batches.append(rows_t)
        return self._real(rows)

    def arm(self) -> Hold:
        """The next ``forward`` call waits inside until the returned hold is released."""
        hold = Hold()
        self._holds.append(hold)
        return hold

    def hold_loop(self, engine: BatchingEngine, text: str = "blocker text") -> tuple[Future, Hold]:
        """Submit a one-text request and return once the loop thread is inside its ``forward``: everything
        submitted until the hold is released waits in the queue."""
        hold = self.arm()
        future = engine.submit([text])
        assert hold.entered.wait(WAIT_S), "the loop never ran the blocker"
        return future, hold

    def rows_run(self) -> Counter:
        return Counter(row for batch in self.batches for row in batch)


def assert_same(results: list[dict], expected: list[dict]) -> None:
    """Engine results equal the unbatched ones: same labels in the same order, scores within 1e-5."""
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        if "tasks" in want:
            assert set(got) == {"tasks"} and set(got["tasks"]) == set(want["tasks"])
            pairs = [(got["tasks"][t], want["tasks"][t]) for t in want["tasks"]]
        else:
            assert set(got) == {"label", "score", "scores"}
            pairs = [(got, want)]
        for g, w in pairs:
            assert g["label"] == w["label"]
            assert g["score"] == pytest.approx(w["score"], abs=1e-5)
            assert list(g["scores"]) == list(w["scores"])
            assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)


def _text(rng: random.Random, prefix: str, max_words: int = 30) -> str:
    return " ".join([prefix, *(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))])


def _result(future: Future, timeout: float = WAIT_S):
    return future.result(timeout=timeout)


# ---------------------------------------------------------------- property test


def test_concurrent_requests_get_their_own_unbatched_results(served, reference, monkeypatch):
    """30 seeded cases: threads submit requests of 1..40 random texts to one engine at once (random engine
    limits); every request gets exactly what predicting its texts alone gives, in order; every text reaches the
    model exactly once, in batches within the limits; and some batches held texts of several requests."""
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    mixed_batches = total_batches = total_texts = 0
    for case in range(30):
        rng = random.Random(1000 + case)
        engine = BatchingEngine(
            predictor,
            wait_ms=rng.choice([0, 1, 5]),
            max_batch_size=rng.choice([2, 5, 16, 64]),
            max_batch_tokens=rng.choice([24, 256, 8192]),
            streams=rng.choice([1, 2, 3]),  # several loops forming and running batches side by side
        )
        n_threads = rng.randint(2, 6)
        # sizes 1..40, half of them small (interactive-sized: what the engine batches across requests)
        sizes = [[rng.randint(1, batching.SMALL_REQUEST_TEXTS) if rng.random() < 0.5 else rng.randint(1, 40)
                  for _ in range(rng.randint(1, 3))] for _ in range(n_threads)]
        plans = [[[_text(rng, f"r{t}q{q}") for _ in range(n)] for q, n in enumerate(thread_sizes)]
                 for t, thread_sizes in enumerate(sizes)]
        owner: dict[tuple[int, ...], str] = {}  # token-id row -> the request it belongs to
        expected_rows: Counter = Counter()
        for t, requests in enumerate(plans):
            for q, texts in enumerate(requests):
                for row in reference["single"].encode(texts):
                    assert owner.setdefault(tuple(row), f"{t}/{q}") == f"{t}/{q}", "texts must not collide"
                    expected_rows[tuple(row)] += 1
        n_texts = sum(len(texts) for requests in plans for texts in requests)

        # half the cases hold the loop until every thread has queued its first request (the queued small ones
        # then share batches); the others let the threads race the loop
        held = case % 2 == 0
        recorder.batches.clear()
        blocker, hold = recorder.hold_loop(engine, "blocker text") if held else (None, None)
        if held:
            expected_rows[tuple(reference["single"].encode(["blocker text"])[0])] += 1
        submitted = threading.Semaphore(0)
        real_submit = engine.submit

        def counting_submit(texts, pairs=None, *, should_stop=None, _real=real_submit, _sem=submitted):
            future = _real(texts, pairs, should_stop=should_stop)
            _sem.release()
            return future

        engine.submit = counting_submit  # engine.predict goes through it
        results: dict[tuple[int, int], list] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_threads)

        def run(t: int) -> None:
            try:
                barrier.wait(WAIT_S)
                for q, texts in enumerate(plans[t]):
                    results[(t, q)] = engine.predict(texts)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        if held:
            for _ in range(n_threads):
                assert submitted.acquire(timeout=WAIT_S)
            hold.release.set()
            _result(blocker)
        for thread in threads:
            thread.join(WAIT_S)
            assert not thread.is_alive()
        assert not errors, errors

        for t, requests in enumerate(plans):
            for q, texts in enumerate(requests):
                assert_same(results[(t, q)], reference["single"].predict(texts))
        # every text went through the model exactly once, in batches within the engine's limits
        assert recorder.rows_run() == expected_rows, f"case {case}"
        assert engine.rows_run == n_texts + (1 if held else 0)
        for batch in recorder.batches:
            assert len(batch) <= engine.max_batch_size
            assert len(batch) == 1 or len(batch) * max(map(len, batch)) <= engine.max_batch_tokens
            mixed_batches += len({owner[row] for row in batch if row in owner}) >= 2
        total_batches += len(recorder.batches)
        total_texts += n_texts
    assert mixed_batches > 0, "no batch ever held texts of two requests"
    assert total_batches < total_texts


def test_queued_small_requests_share_one_batch(served, reference, monkeypatch):
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    engine = BatchingEngine(predictor, wait_ms=0)
    requests = {name: [f"{name} gate flight {i}" for i in range(3)] for name in ("aa", "bb", "cc")}
    blocker, hold = recorder.hold_loop(engine)
    futures = {name: engine.submit(texts) for name, texts in requests.items()}
    hold.release.set()
    _result(blocker)
    for name, texts in requests.items():
        assert_same(predictor.results(_result(futures[name])), reference["single"].predict(texts))
    # all nine rows have the same length: one batch after the blocker's
    owner = {tuple(r): name for name, texts in requests.items() for r in reference["single"].encode(texts)}
    assert [len(b) for b in recorder.batches] == [1, 9]
    assert {owner[row] for row in recorder.batches[1]} == {"aa", "bb", "cc"}
    assert (engine.batches_run, engine.rows_run) == (2, 10)


def test_requests_enqueued_together_share_one_batch_even_with_an_idle_loop(served, reference, monkeypatch):
    """The /predict lane's case: many small requests encoded first, then queued at once (``enqueue``), with no
    partner wait (``wait_ms=0``) and nothing holding the loop: one forward pass for all, not the first alone."""
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    engine = BatchingEngine(predictor, wait_ms=0)
    requests = [[f"job {i} lost my bag"] for i in range(6)] + [[]]  # an empty request resolves at once
    futures = engine.enqueue([(engine.encode(texts), None) for texts in requests])
    for texts, future in zip(requests, futures):
        assert_same(predictor.results(_result(future)), reference["single"].predict(texts) if texts else [])
    assert [len(batch) for batch in recorder.batches] == [6]


def test_small_requests_queued_together_are_shared_by_the_free_streams(served, reference, monkeypatch):
    """The lane's batch of one-text jobs on a CPU engine of two streams, both free: each stream takes an even share
    and they run side by side (one stream running all six while the other waits would leave a core idle)."""
    predictor = served["single"]
    engine = BatchingEngine(predictor, wait_ms=0, streams=2)
    engine.predict(["warm the loops up"])
    deadline = time.monotonic() + WAIT_S
    while engine._free_loops < 2:  # both loops back, waiting for work
        assert time.monotonic() < deadline, "the loops never came back"
        time.sleep(0.01)
    recorder = Recorder(predictor, monkeypatch)
    requests = [[f"job {i} lost my bag"] for i in range(6)]
    futures = engine.enqueue([(engine.encode(texts), None) for texts in requests])
    for texts, future in zip(requests, futures):
        assert_same(predictor.results(_result(future)), reference["single"].predict(texts))
    # (a loop back from its batch before the other woke takes a share again: still no batch of all six)
    assert sum(len(batch) for batch in recorder.batches) == 6 and max(len(b) for b in recorder.batches) <= 3
    assert len(recorder.threads) == 2


def test_at_exit_the_loops_leave_before_the_interpreter_finalizes(served, reference, monkeypatch):
    """A daemon loop thread still inside torch during finalization aborts the process (exit status 134): the exit
    hook (for every engine of the process) makes idle loops leave at once and a busy one after its batch, failing
    what is still queued instead of running it."""
    from ml import batching

    predictor = served["single"]
    engine = BatchingEngine(predictor, wait_ms=0, streams=1)
    monkeypatch.setattr(batching, "_ENGINES", {engine})  # this test's engine only: the others stay as they are
    engine.predict(["warm the loop up"])
    recorder = Recorder(predictor, monkeypatch)
    running, hold = recorder.hold_loop(engine, "the batch running at exit")
    queued = engine.submit(["queued behind it"])
    exiting = threading.Thread(target=batching._stop_loops_at_exit)
    exiting.start()
    deadline = time.monotonic() + WAIT_S
    while not engine._closing:  # the hook has begun (it then waits for the batch held inside the model)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    hold.release.set()
    exiting.join(WAIT_S)
    assert not exiting.is_alive() and not any(thread.is_alive() for thread in engine._threads)
    assert_same(predictor.results(_result(running)), reference["single"].predict(["the batch running at exit"]))
    with pytest.raises(RuntimeError, match="exiting"):
        _result(queued)
    with pytest.raises(RuntimeError, match="exiting"):  # nothing runs afterwards
        engine.predict(["after the exit hook"])


def test_two_models_never_share_a_batch(served, reference, monkeypatch):
    single, multi = served["single"], served["multi"]
    recorders = {"single": Recorder(single, monkeypatch), "multi": Recorder(multi, monkeypatch)}
    engines = {"single": BatchingEngine(single, wait_ms=2), "multi": BatchingEngine(multi, wait_ms=2)}
    rng = random.Random(7)
    plans = [(name, [_text(rng, f"{name}{t}") for _ in range(rng.randint(1, 40))])
             for t in range(8) for name in ("single", "multi")]
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(plans))

    def run(i: int) -> None:
        name, texts = plans[i]
        try:
            barrier.wait(WAIT_S)
            results[i] = engines[name].predict(texts)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors, errors
    for i, (name, texts) in enumerate(plans):
        assert_same(results[i], reference[name].predict(texts))
        assert ("tasks" in results[i][0]) == (name == "multi")
    for name, recorder in recorders.items():
        own = Counter(tuple(r) for n, texts in plans if n == name for r in reference[name].encode(texts))
        assert recorder.rows_run() == own  # each model saw exactly its own texts, each once


# ---------------------------------------------------------------- cancellation and failures


def test_cancelled_request_is_dropped_and_its_partners_are_served(served, reference, monkeypatch):
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    engine = BatchingEngine(predictor, wait_ms=0)
    first = [f"first partner {w}" for w in WORDS[:5]]
    doomed = [f"cancelled job {w}" for w in WORDS[5:10]]
    second = [f"second partner {w}" for w in WORDS[10:15]]
    blocker, hold = recorder.hold_loop(engine)
    f1 = engine.submit(first)
    fx = engine.submit(doomed, should_stop=lambda: True)
    f2 = engine.submit(second)
    hold.release.set()
    _result(blocker)
    assert_same(predictor.results(_result(f1)), reference["single"].predict(first))
    assert_same(predictor.results(_result(f2)), reference["single"].predict(second))
    with pytest.raises(RequestCancelled):
        _result(fx)
    doomed_rows = {tuple(r) for r in reference["single"].encode(doomed)}
    assert not doomed_rows & set(recorder.rows_run())  # none of its texts reached the model
    with pytest.raises(RequestCancelled):
        engine.predict(["cancelled before it started"], should_stop=lambda: True)


def test_request_cancelled_part_way_stops_and_the_engine_goes_on(served, reference, monkeypatch):
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    engine = BatchingEngine(predictor, wait_ms=0, max_batch_size=4)  # 25 batches for the big request
    big = [f"big job row {i} " + " ".join(WORDS[: i % 7]) for i in range(100)]
    partner = [f"partner row {i}" for i in range(3)]
    stop = threading.Event()
    blocker, hold = recorder.hold_loop(engine)
    fbig = engine.submit(big, should_stop=stop.is_set)
    fpartner = engine.submit(partner)
    real_forward = recorder._forward

    def forward_then_cancel(rows):
        out = real_forward(rows)
        if len(recorder.batches) >= 4:  # the blocker's batch and a few of the big job's
            stop.set()
        return out

    monkeypatch.setattr(predictor, "forward", forward_then_cancel)
    hold.release.set()
    _result(blocker)
    with pytest.raises(RequestCancelled):
        _result(fbig)
    assert_same(predictor.results(_result(fpartner)), reference["single"].predict(partner))
    big_rows = Counter(tuple(r) for r in reference["single"].encode(big))
    ran = sum(n for row, n in recorder.rows_run().items() if row in big_rows)
    assert 0 < ran < len(big)
    later = ["after the cancellation", "still served"]
    assert_same(engine.predict(later), reference["single"].predict(later))


def test_a_broken_should_stop_does_not_cancel(served, reference):
    engine = BatchingEngine(served["single"], wait_ms=0)

    def broken() -> bool:
        raise RuntimeError("lost the database")

    texts = ["should_stop raises", "the request goes on"]
    assert_same(engine.predict(texts, should_stop=broken), reference["single"].predict(texts))


def test_failing_text_fails_only_its_own_request(served, reference, monkeypatch):
    predictor = served["single"]
    (poison_id,) = reference["single"].encode([POISON])[0][1:-1]  # one wordpiece between [CLS] and [SEP]
    recorder = Recorder(predictor, monkeypatch, poison_id=poison_id)
    engine = BatchingEngine(predictor, wait_ms=0)
    before = [f"partner before {w}" for w in WORDS[:6]]
    bad = ["good text one", f"a {POISON} in the row", "good text two"]
    after = [f"partner after {w}" for w in WORDS[6:12]]
    blocker, hold = recorder.hold_loop(engine)
    fb, fx, fa = engine.submit(before), engine.submit(bad), engine.submit(after)
    hold.release.set()
    _result(blocker)
    assert_same(predictor.results(_result(fb)), reference["single"].predict(before))
    assert_same(predictor.results(_result(fa)), reference["single"].predict(after))
    with pytest.raises(ValueError, match="poisoned row"):
        _result(fx)
    # the poison shared a batch with partner rows; that batch failed, then only the poison row failed alone
    assert any(len(batch) > 1 for batch in recorder.failed)
    assert recorder.failed[-1] == [tuple(reference["single"].encode([bad[1]])[0])]
    partner_rows = Counter(tuple(r) for r in reference["single"].encode(before + after))
    assert Counter({r: n for r, n in recorder.rows_run().items() if r in partner_rows}) == partner_rows
    # a request of the poison alone fails with the model's own error; the engine keeps serving
    with pytest.raises(ValueError, match="poisoned row"):
        engine.predict([POISON])
    assert_same(engine.predict(["fine again"]), reference["single"].predict(["fine again"]))


def test_a_malformed_backend_answer_fails_its_batch_and_the_loop_survives(served, reference, monkeypatch):
    """Anything but the model's own exception (here: forward answers fewer rows than it was given) fails the
    requests of that batch with a RuntimeError instead of leaving them waiting; the loop goes on."""
    predictor = served["single"]
    engine = BatchingEngine(predictor, wait_ms=0)
    real = predictor.forward
    calls = []

    def short_once(rows):
        calls.append(len(rows))
        out = real(rows)
        return {task: probs[:-1] for task, probs in out.items()} if len(calls) == 1 else out

    monkeypatch.setattr(predictor, "forward", short_once)
    with pytest.raises(RuntimeError, match="inference loop failed"):
        _result(engine.submit(["first batch", "comes back short"]))
    texts = ["next batch", "works"]
    assert_same(engine.predict(texts), reference["single"].predict(texts))


# ---------------------------------------------------------------- edges and scheduling


def test_empty_request_and_zero_wait(served, reference):
    engine = BatchingEngine(served["single"], wait_ms=0)
    assert engine.predict([]) == []
    assert engine.submit([]).result(timeout=0) == []
    assert engine.rows_run == 0
    texts = [f"no waiting {i} " + " ".join(WORDS[:i]) for i in range(20)]
    assert_same(engine.predict(texts), reference["single"].predict(texts))
    with pytest.raises(TypeError):
        engine.submit("a string, not a list")


@pytest.mark.parametrize("options", [{"wait_ms": -1}, {"max_batch_size": 0}, {"max_batch_tokens": 0},
                                     {"streams": 0}])
def test_bad_engine_options(served, options):
    with pytest.raises(ValueError):
        BatchingEngine(served["single"], **options)


def test_streams_run_batches_side_by_side(served, reference, monkeypatch):
    """With two streams a second request runs while the first one's batch is still inside the model (each stream
    its own loop thread); with one, it waits for that batch."""
    predictor = served["single"]
    for streams in (2, 1):
        recorder = Recorder(predictor, monkeypatch)  # wraps the previous round's recorder, whose holds are spent
        engine = BatchingEngine(predictor, wait_ms=0, streams=streams)
        first, first_hold = recorder.hold_loop(engine, "the first request")
        second_hold = recorder.arm()
        second = engine.submit(["the second request"])
        assert second_hold.entered.wait(2 if streams == 2 else 0.5) == (streams == 2)
        second_hold.release.set()
        first_hold.release.set()
        assert_same(predictor.results(_result(second)), reference["single"].predict(["the second request"]))
        assert_same(predictor.results(_result(first)), reference["single"].predict(["the first request"]))
        assert len(recorder.threads) == streams  # two loops ran one batch each; one loop ran both


def test_a_large_request_is_shared_by_the_streams(served, reference, monkeypatch):
    """The batches of one large request (its sorted pool) are taken by whichever stream is free: all its rows run
    exactly once and its results come back in order."""
    predictor = served["single"]
    engine = BatchingEngine(predictor, wait_ms=0, max_batch_size=4, streams=3)
    engine.predict(["warm the loops up"])  # every loop started; they now sleep until a request wakes them
    recorder = Recorder(predictor, monkeypatch)
    large = [f"pooled row {i} " + " ".join(WORDS[: i % 17]) for i in range(150)]
    assert_same(engine.predict(large), reference["single"].predict(large))
    assert recorder.rows_run() == Counter(tuple(r) for r in reference["single"].encode(large))
    assert engine.rows_run == 1 + len(large) and all(len(batch) <= 4 for batch in recorder.batches)
    # one enqueue wakes one loop; a loop that leaves work behind wakes the next, so the warm engine's streams all ran
    assert len(recorder.threads) >= 2


@pytest.mark.parametrize("streams", [1, 3])
def test_a_request_queued_while_a_loop_leaves_for_idleness_is_still_served(monkeypatch, streams):
    """Loops that exit after IDLE_EXIT_S (here 5 ms) look at the queue again after a timed-out wait: a request
    queued just then (whose notify the leaving loop consumed) is served, never stranded."""
    monkeypatch.setattr(batching, "IDLE_EXIT_S", 0.005)
    engine = batching.BatchingEngine(_FakeBackendForFailure(), wait_ms=0, streams=streams)
    rng = random.Random(streams)
    for n in range(400):
        assert engine.submit([f"text {n}"]).result(timeout=5) == [{"only": [1.0]}], n
        if rng.random() < 0.5:
            threading.Event().wait(rng.choice([0.003, 0.005, 0.006]))


def test_multitask_engine_results(served, reference):
    engine = BatchingEngine(served["multi"], wait_ms=0, max_batch_size=3)
    texts = [f"multi {i} " + " ".join(WORDS[i:]) for i in range(10)]
    assert_same(engine.predict(texts), reference["multi"].predict(texts))


def test_small_request_is_served_before_a_large_queued_one(served, reference, monkeypatch):
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    engine = BatchingEngine(predictor, wait_ms=0, max_batch_size=8)
    large = [f"large job row {i} " + " ".join(WORDS[: i % 11]) for i in range(500)]
    small = ["one interactive text"]
    (small_row,) = [tuple(r) for r in reference["single"].encode(small)]
    done: list[tuple[str, int]] = []  # (request, batches the model had run when it completed)

    def track(name: str, future: Future) -> Future:
        future.add_done_callback(lambda _f: done.append((name, len(recorder.batches))))
        return future

    blocker, hold = recorder.hold_loop(engine)
    blocker = track("blocker", blocker)
    flarge = track("large", engine.submit(large))  # queued first
    fsmall = track("small", engine.submit(small))  # queued after it
    hold.release.set()
    assert_same(predictor.results(_result(fsmall)), reference["single"].predict(small))
    assert_same(predictor.results(_result(flarge)), reference["single"].predict(large))
    _result(blocker)
    assert [name for name, _ in done] == ["blocker", "small", "large"]
    assert recorder.batches[1] == [small_row]  # the very next batch, ahead of the large request's 500 rows
    assert done[1][1] == 2
    assert sum(map(len, recorder.batches)) == 1 + len(large) + len(small)


def test_small_request_arriving_while_a_large_one_runs_waits_for_one_batch_at_most(served, reference, monkeypatch):
    predictor = served["single"]
    recorder = Recorder(predictor, monkeypatch)
    engine = BatchingEngine(predictor, wait_ms=0, max_batch_size=8)
    large = [f"long running job {i} " + " ".join(WORDS[: i % 13]) for i in range(300)]
    small = ["interactive", "predict call"]
    small_rows = sorted(tuple(r) for r in reference["single"].encode(small))
    blocker, first = recorder.hold_loop(engine)
    flarge = engine.submit(large)
    during = recorder.arm()  # the large request's first batch will wait inside forward
    first.release.set()
    assert during.entered.wait(WAIT_S)
    fsmall = engine.submit(small)  # arrives while the large request is running
    during.release.set()
    assert_same(predictor.results(_result(fsmall)), reference["single"].predict(small))
    assert_same(predictor.results(_result(flarge)), reference["single"].predict(large))
    _result(blocker)
    large_rows = {tuple(r) for r in reference["single"].encode(large)}
    assert set(recorder.batches[1]) <= large_rows  # the batch that was running when the small request came
    assert sorted(recorder.batches[2]) == small_rows  # served right after it
    assert sum(map(len, recorder.batches)) == 1 + len(large) + len(small)


def test_idle_loop_thread_exits_and_a_later_request_restarts_it(served, reference, monkeypatch):
    monkeypatch.setattr(batching, "IDLE_EXIT_S", 0.5)
    engine = BatchingEngine(served["single"], wait_ms=0)

    def new_loop_threads(before: set) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("batching-engine") and t not in before]

    before = set(threading.enumerate())
    texts = ["wake the loop", "and classify"]
    assert_same(engine.predict(texts), reference["single"].predict(texts))
    (first,) = new_loop_threads(before)
    first.join(WAIT_S)
    assert not first.is_alive()  # idle for IDLE_EXIT_S: the thread left

    before = set(threading.enumerate())
    more = ["a later request", "restarts it"]
    assert_same(engine.predict(more), reference["single"].predict(more))
    (second,) = new_loop_threads(before)
    assert second is not first
    second.join(WAIT_S)
    assert not second.is_alive()
    assert (engine.rows_run, engine.batches_run) == (4, 2)


def test_an_error_while_forming_a_batch_fails_the_waiting_requests_and_the_loop_goes_on(monkeypatch):
    """A broken batch-forming step must not strand callers behind a dead loop thread."""
    from ml import batching

    predictor = _FakeBackendForFailure()
    engine = batching.BatchingEngine(predictor, wait_ms=0)
    real = batching.token_budget_batches
    calls = {"n": 0}

    def broken_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated")
        return real(*args, **kwargs)

    monkeypatch.setattr(batching, "token_budget_batches", broken_once)
    with pytest.raises(RuntimeError, match="inference loop failed"):
        engine.submit(["x"]).result(timeout=5)
    assert engine.submit(["y"]).result(timeout=5) == [{"only": [1.0]}]  # the loop survived


class _FakeBackendForFailure:
    """The narrow backend with no model: one token per text, probability 1 for its only label."""

    def encode(self, texts):
        return [[1] for _ in texts]

    def forward(self, rows):
        return {"only": [[1.0] for _ in rows]}

    def results(self, probabilities):
        return probabilities
