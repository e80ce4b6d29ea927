"""An OOM-killed training attempt fails its job at the next claim; any other lost attempt resumes (worker.oom)."""
from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

import pytest

from core import jobs, runtime
from core.db import db
from core.jobs import ClaimOutcome
from core.schema import Job, JobType, utcnow
from worker import oom

HOST = socket.gethostname()


# ------------------------------------------------------------------ the counter (faked cgroup files)


def _fake_cgroup(tmp_path, proc_line: str, files: dict[str, str]):
    proc = tmp_path / "proc_cgroup"
    proc.write_text(proc_line)
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return proc, root


EVENTS = "low 0\nhigh 0\nmax 12\noom 2\noom_kill {n}\noom_group_kill 0\n"


@pytest.mark.parametrize("proc_line, path", [
    ("0::/system.slice/worker.service\n", "system.slice/worker.service/memory.events"),  # cgroup v2
    ("0::/\n", "memory.events"),  # v2 in a container: its cgroup is the mount's root
    ("4:memory:/docker/abc\n0::/\n", "memory/docker/abc/memory.oom_control"),  # v1 memory controller
    ("4:memory:/docker/abc\n0::/\n", "memory/memory.oom_control"),  # v1 in a container (path not visible)
])
def test_the_counter_is_found_and_read(tmp_path, proc_line, path):
    text = EVENTS if path.endswith("events") else "oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"
    proc, root = _fake_cgroup(tmp_path, proc_line, {path: text.format(n=3)})
    assert oom.counter_file(proc, root) == root / path
    assert oom.watch(proc, root) == {"host": HOST, "counter": str(root / path), "oom_kills": 3}


def test_no_counter_no_watch(tmp_path):
    proc, root = _fake_cgroup(tmp_path, "0::/x\n", {"x/memory.events": "low 0\n"})  # an old kernel: no oom_kill
    assert oom.watch(proc, root) is None
    assert oom.watch(tmp_path / "missing", root) is None  # not Linux


def test_verdict_needs_a_higher_count_in_the_same_cgroup_of_the_same_host(tmp_path):
    proc, root = _fake_cgroup(tmp_path, "0::/w\n", {"w/memory.events": EVENTS.format(n=0)})
    recorded = oom.watch(proc, root)
    assert oom.verdict(recorded, oom.watch(proc, root)) is None  # a plain kill (crash, deploy): resume
    (root / "w/memory.events").write_text(EVENTS.format(n=1))
    now = oom.watch(proc, root)
    assert oom.verdict(recorded, now) == oom.OOM_MESSAGE
    assert "out-of-memory killer" in oom.OOM_MESSAGE and "MAX_TRAIN_BATCH_TOKENS" in oom.OOM_MESSAGE
    assert oom.verdict({**recorded, "host": "elsewhere"}, now) is None  # another host's counter says nothing
    assert oom.verdict({**recorded, "counter": "/other/memory.events"}, now) is None
    assert oom.verdict(None, now) is None


# ------------------------------------------------------------------ the claim


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request, settings):
    if request.param == "postgresql":
        from tests.factories import migrate

        url = request.getfixturevalue("postgres_schema_url")
        migrate(url)
        runtime.configure(settings.replace(database_url=url))
    yield
    db.dispose()


def _dead_owner() -> str:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer names a process: like a SIGKILLed prefork child
    return f"{HOST}#abc:{dead.pid}"


def _claim(job_id, worker, kills: int | None, now=None):
    watch = {"host": HOST, "counter": "/sys/fs/cgroup/memory.events", "oom_kills": kills} if kills is not None else None
    with db.session() as session:
        return jobs.claim(session, job_id, worker, lease_seconds=60, max_attempts=3, now=now,
                          oom_watch=watch, oom_verdict=lambda recorded: oom.verdict(recorded, watch))


def _job(job_id) -> Job:
    with db.session() as session:
        return session.get(Job, job_id)


def _train_job() -> str:
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.TRAIN, {}).id
        session.commit()
        return job_id


def test_an_oom_killed_attempt_fails_the_job_at_the_next_claim(database):
    job_id = _train_job()
    assert _claim(job_id, _dead_owner(), kills=4).outcome is ClaimOutcome.CLAIMED
    assert _job(job_id).oom_watch["oom_kills"] == 4
    claim = _claim(job_id, "w2", kills=5)  # the kernel killed something in this cgroup meanwhile
    assert (claim.outcome, claim.attempts) == (ClaimOutcome.OOM_KILLED, 1)
    job = _job(job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 1, oom.OOM_MESSAGE)


def test_a_plainly_killed_attempt_resumes(database):
    job_id = _train_job()
    assert _claim(job_id, _dead_owner(), kills=4).outcome is ClaimOutcome.CLAIMED
    claim = _claim(job_id, _dead_owner(), kills=4)  # SIGKILL without an OOM kill (a crash, a deploy)
    assert (claim.outcome, claim.attempts) == (ClaimOutcome.CLAIMED, 2)
    assert _claim(job_id, "w3", kills=None).outcome is ClaimOutcome.CLAIMED  # no counter there: no evidence
    assert _job(job_id).oom_watch is None
    assert _claim(job_id, "w4", kills=9, now=utcnow() + timedelta(seconds=120)).outcome is ClaimOutcome.GAVE_UP


def test_a_stale_lease_after_an_oom_kill_fails_too_and_a_live_lease_stays_busy(database):
    job_id = _train_job()
    assert _claim(job_id, "w1", kills=0).outcome is ClaimOutcome.CLAIMED
    assert _claim(job_id, "w2", kills=1).outcome is ClaimOutcome.BUSY  # w1's lease is fresh: not ours to judge
    claim = _claim(job_id, "w2", kills=1, now=utcnow() + timedelta(seconds=120))
    assert claim.outcome is ClaimOutcome.OOM_KILLED and _job(job_id).status == "failed"


# ------------------------------------------------------------------ the worker


def test_the_training_worker_records_the_counter_and_fails_an_oom_killed_job_without_running_it(settings,
                                                                                                  monkeypatch):
    from worker.jobs import train

    counter = {"host": HOST, "counter": "/fake/memory.events", "oom_kills": 7}
    monkeypatch.setattr(oom, "watch", lambda *args: dict(counter))
    with db.session() as session:
        no_dataset = jobs.create_job(session, JobType.TRAIN, {}).id  # its attempt fails right after the claim
        session.commit()
    train.run_training(no_dataset)
    job = _job(no_dataset)
    assert job.status == "failed" and job.oom_watch == counter  # the claim recorded the count

    job_id = _train_job()
    with db.session() as session:  # an attempt that recorded 7, then its worker vanished
        jobs.claim(session, job_id, _dead_owner(), lease_seconds=60, max_attempts=3, oom_watch=dict(counter))
    counter["oom_kills"] = 8  # ... and the kernel's OOM killer struck in this cgroup meanwhile
    monkeypatch.setattr(train, "_read_training", lambda *_: pytest.fail("an OOM-killed job must not run again"))
    train.run_training(job_id)
    job = _job(job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 1, oom.OOM_MESSAGE)
