"""Issue 16: what one training request costs the web process.

Prints the web process's peak RSS for ``POST /api/v1/jobs/train`` on a dataset of short rows (default 50 MB of 5-byte rows), and
the time to refuse the same request when the user is over MAX_ACTIVE_JOBS_PER_USER. Each measurement runs in a
fresh process (peak RSS is per process). Runs on any commit (the dataset row is written straight to SQL, so the
upload's own limits do not apply); no broker needed (enqueueing is skipped).

    .venv/bin/python bench/web_limits.py [--mb 50]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _measure(db_path: str, over_quota: bool) -> dict:
    sys.path.insert(0, str(REPO))
    from core import runtime
    from core.config import Settings
    from core.db import db
    from core.schema import Base, Dataset
    from tests.factories import api_client, make_user
    from tests.web import factories as f
    from web import create_app, services

    settings = Settings(database_url=f"sqlite:///{db_path}", model_store=tempfile.mkdtemp(), device="cpu",
                        secret_key="bench", celery_eager=False, max_active_jobs_per_user=1)
    runtime.configure(settings)
    Base.metadata.create_all(db.engine)
    services._enqueue = lambda job_id, job_type: None  # no broker: the job row is what matters
    user = make_user(f"bench-{int(over_quota)}")
    with db.session() as session:
        dataset_id = session.query(Dataset.id).scalar()  # shared: readable by the user, content not loaded
    if over_quota:
        f.make_train_job(dataset_id, owner_id=user.id)
    client = api_client(create_app({"TESTING": True, "SETTINGS": settings}), user)
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label", "epochs": 1, "max_length": 16}
    before = _rss_mb()
    start = time.perf_counter()
    response = client.post("/api/v1/jobs/train", json=body)
    elapsed = time.perf_counter() - start
    return {"status": response.status_code, "code": (response.json.get("error") or {}).get("code")
            if response.status_code >= 400 else None, "seconds": round(elapsed, 3),
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(_rss_mb(), 1)}


def _make_dataset(db_path: str, mb: float) -> tuple[int, int]:
    sys.path.insert(0, str(REPO))
    from core import runtime
    from core.config import Settings
    from core.db import db
    from core.schema import Base, Dataset

    runtime.configure(Settings(database_url=f"sqlite:///{db_path}", secret_key="bench"))
    Base.metadata.create_all(db.engine)
    rows = int(mb * 2**20 / 5)  # "t3,a\n"
    content = b"text,label\n" + b"".join(b"t%d,%s\n" % (i % 10, b"ab"[i % 2:i % 2 + 1]) for i in range(rows))
    with db.session() as session:
        session.add(Dataset(owner_id=None, shared=True, name="bench", filename="bench.csv", columns=["text", "label"],
                            row_count=rows, size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest(),
                            format="csv", content=content))
    return rows, len(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="dataset size in MB (5-byte rows)")
    parser.add_argument("--child", nargs=2, metavar=("DB", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[1] == "make":  # a child too: a process's peak RSS is inherited by the children it forks
            rows, size = _make_dataset(args.child[0], args.mb)
            print(f"dataset: {rows:,} rows, {size / 2**20:.1f} MB")
        else:
            print(json.dumps(_measure(args.child[0], args.child[1] == "over")))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db_path = str(Path(tmp) / "bench.db")
        for mode in ("make", "accepted", "over"):
            out = subprocess.run([sys.executable, __file__, "--mb", str(args.mb), "--child", db_path, mode], capture_output=True, text=True, check=False,
                                 cwd=REPO)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            print("" if mode == "make" else mode, out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
