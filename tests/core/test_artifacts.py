"""The SQL model store and each host's cache (core.artifacts, issue 19 part 2): files stored in chunks and fetched
verified, never used half-written; least recently used evicted; faults retried, then clear errors."""
from __future__ import annotations

import errno
import hashlib
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from core import artifacts
from core.config import Settings
from core.db import db
from core.schema import ModelFile, ModelFileChunk, TrainedModel
from tests.factories import tiny_model_row
from worker.reconciler import sweep_model_store


@pytest.fixture
def sql_settings(settings, tmp_path, monkeypatch) -> Settings:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)  # several chunks per file
    monkeypatch.setattr(artifacts, "PIN_S", 0.0)
    return settings.replace(model_store="sql", model_cache_dir=str(tmp_path / "cache"), model_cache_mb=1)


def _folder(path: Path, weights: bytes = b"w" * 2500) -> Path:
    path.mkdir(parents=True)
    (path / "bertqueue_config.json").write_text('{"family": "bert"}')
    (path / "model.safetensors").write_bytes(weights)
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (path / ".hidden").write_text("never stored")
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _published(settings: Settings, tmp_path: Path, key: str, size: int = 2500) -> str:
    return artifacts.publish(settings, _folder(tmp_path / "src" / key, os.urandom(size)), key)


def test_settings_choose_the_store():
    assert Settings.from_env({"MODEL_STORE": "sql"}).sql_model_store
    directory = Settings.from_env({"MODEL_STORE": "/data/models"})
    assert not directory.sql_model_store and directory.local_model_dir == Path("/data/models")
    with pytest.raises(ValueError, match="object stores"):
        Settings.from_env({"MODEL_STORE": "s3://bucket/prefix"})
    with pytest.raises(ValueError, match="MODEL_CACHE_MB"):
        Settings.from_env({"MODEL_CACHE_MB": "0"})


def test_published_files_come_back_verified_from_an_empty_cache(sql_settings, tmp_path):
    source = _folder(tmp_path / "src", os.urandom(2500))
    expected = {name: data for name, data in _files(source).items() if name != ".hidden"}
    artifact_dir = artifacts.publish(sql_settings, source, "job-1")
    assert artifact_dir == "sql:job-1" and not source.exists()  # consumed: the store holds the files now
    with db.session() as session:
        stored = {f.name: (f.size_bytes, f.sha256) for f in session.scalars(select(ModelFile))}
        chunks = session.scalar(select(func.count()).select_from(ModelFileChunk))
    assert stored == {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in expected.items()}
    assert chunks == 3 + 1 + 1  # 2500 bytes in chunks of 1000; the small files one each

    loads, hits = artifacts.cache_stats["loads"], artifacts.cache_stats["hits"]
    local = artifacts.local_path(sql_settings, artifact_dir)
    assert local == Path(sql_settings.model_cache_dir) / "models" / "job-1" and _files(local) == expected
    assert artifacts.local_path(sql_settings, artifact_dir) == local  # the second time: from the cache
    assert (artifacts.cache_stats["loads"] - loads, artifacts.cache_stats["hits"] - hits) == (1, 1)
    assert list((Path(sql_settings.model_cache_dir) / "downloads").iterdir()) == []  # no scratch left


def test_a_directory_store_keeps_working(settings, tmp_path):
    artifact_dir = artifacts.publish(settings, _folder(tmp_path / "src"), "job-1")
    assert artifact_dir == str(Path(settings.model_store) / "models" / "job-1")
    assert artifacts.local_path(settings, artifact_dir) == Path(artifact_dir)
    artifacts.discard(settings, artifact_dir)
    assert not Path(artifact_dir).exists()


def test_a_checksum_mismatch_is_retried_and_never_used(sql_settings, tmp_path, monkeypatch):
    artifact_dir = _published(sql_settings, tmp_path, "job-1")
    with db.session() as session:  # one chunk corrupted in the store
        file_id = session.scalar(select(ModelFile.id).where(ModelFile.name == "model.safetensors"))
        session.execute(update(ModelFileChunk).where(ModelFileChunk.file_id == file_id, ModelFileChunk.seq == 1)
                        .values(data=b"x" * 1000))
    monkeypatch.setattr(artifacts, "FETCH_RETRY_S", 0.5)
    failures = artifacts.cache_stats["fetch_failures"]
    with pytest.raises(artifacts.ArtifactUnavailable, match="sha256"):
        artifacts.local_path(sql_settings, artifact_dir)
    assert artifacts.cache_stats["fetch_failures"] - failures >= 2  # tried again before giving up
    cache = Path(sql_settings.model_cache_dir)
    assert not (cache / "models" / "job-1").exists() and list((cache / "downloads").iterdir()) == []


def test_an_unreachable_store_is_waited_for(sql_settings, tmp_path, monkeypatch):
    artifact_dir = _published(sql_settings, tmp_path, "job-1")
    real, calls = artifacts._download, []

    def flaky(key, target):
        calls.append(key)
        if len(calls) < 3:
            (target / "model.safetensors").write_bytes(b"half")  # a partial file, then the connection drops
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return real(key, target)

    monkeypatch.setattr(artifacts, "_download", flaky)
    local = artifacts.local_path(sql_settings, artifact_dir)
    assert len(calls) == 3 and len((local / "model.safetensors").read_bytes()) == 2500


def test_a_partial_download_is_never_used(sql_settings, tmp_path, monkeypatch):
    """A process killed mid-download leaves only its private scratch folder: the next lookup downloads again."""
    artifact_dir = _published(sql_settings, tmp_path, "job-1")

    def killed(key, target):
        (target / "bertqueue_config.json").write_text("{")
        raise KeyboardInterrupt  # not retried, like a kill

    monkeypatch.setattr(artifacts, "_download", killed)
    with pytest.raises(KeyboardInterrupt):
        artifacts.local_path(sql_settings, artifact_dir)
    monkeypatch.undo()
    monkeypatch.setattr(artifacts, "PIN_S", 0.0)
    assert not (Path(sql_settings.model_cache_dir) / "models" / "job-1").exists()
    assert (artifacts.local_path(sql_settings, artifact_dir) / "bertqueue_config.json").read_text() == \
        '{"family": "bert"}'


def test_least_recently_used_models_are_evicted(sql_settings, tmp_path):
    settings = sql_settings.replace(model_cache_mb=1)
    # three models of 400 kB: two fit in 1 MB
    a, b, c = (_published(settings, tmp_path, key, 400_000) for key in ("a-1", "b-1", "c-1"))
    evictions = artifacts.cache_stats["evictions"]
    path_a = artifacts.local_path(settings, a)
    path_b = artifacts.local_path(settings, b)
    past = time.time() - 100
    os.utime(path_b, (past, past))  # b unused for longer than a
    os.utime(path_a, (past + 50, past + 50))
    artifacts.local_path(settings, c)
    assert artifacts.cache(settings).keys() == ["a-1", "c-1"]
    assert artifacts.cache_stats["evictions"] - evictions == 1


def test_models_in_use_are_not_evicted_and_the_error_says_why(sql_settings, tmp_path, monkeypatch):
    settings = sql_settings.replace(model_cache_mb=1)
    a, b = (_published(settings, tmp_path, key, 600_000) for key in ("a-1", "b-1"))
    artifacts.local_path(settings, a)
    monkeypatch.setattr(artifacts, "PIN_S", 60.0)  # a was just used: a process may be loading it
    with pytest.raises(artifacts.CacheFull, match="MB of cached models in use in the last 60 s"):
        artifacts.local_path(settings, b)
    big = _published(settings, tmp_path, "big-1", 1_100_000)
    with pytest.raises(artifacts.CacheFull, match="larger than the whole model cache"):
        artifacts.local_path(settings, big)
    assert artifacts.cache(settings).keys() == ["a-1"]


def test_a_full_disk_evicts_then_fails_clearly(sql_settings, tmp_path, monkeypatch):
    settings = sql_settings.replace(model_cache_mb=10)
    a, b = (_published(settings, tmp_path, key) for key in ("a-1", "b-1"))
    artifacts.local_path(settings, a)
    tries = []

    def disk_full(key, target):
        tries.append(key)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "_download", disk_full)
    with pytest.raises(artifacts.CacheFull, match="disk of MODEL_CACHE_DIR .* is full"):
        artifacts.local_path(settings, b)
    assert tries == ["b-1", "b-1"]  # one more try after evicting
    assert artifacts.cache(settings).keys() == []  # a made room, and b left nothing behind


def test_missing_files_are_a_lookup_error(sql_settings, tmp_path):
    with pytest.raises(artifacts.ModelFilesMissing):
        artifacts.local_path(sql_settings, "sql:never-published")
    with pytest.raises(artifacts.ModelFilesMissing):
        artifacts.local_path(sql_settings, "sql:../../etc")


def test_discard_removes_stored_files_and_the_local_copy(sql_settings, tmp_path):
    a, b = (_published(sql_settings, tmp_path, key) for key in ("a-1", "b-1"))
    local = artifacts.local_path(sql_settings, a)
    artifacts.discard(sql_settings, a)
    assert not local.exists()
    with db.session() as session:
        assert set(session.scalars(select(ModelFile.artifact_key))) == {"b-1"}
        assert session.scalar(select(func.count()).select_from(ModelFileChunk)) == 5
    with pytest.raises(artifacts.ModelFilesMissing):
        artifacts.local_path(sql_settings, a)


def test_earlier_training_attempts_files_are_removed(sql_settings, tmp_path):
    for key in ("job-1", "job-2", "job-3", "other-1"):
        _published(sql_settings, tmp_path, key)
    artifacts.discard_attempts(sql_settings, "job", keep="job-3")
    with db.session() as session:
        assert set(session.scalars(select(ModelFile.artifact_key))) == {"job-3", "other-1"}


def test_the_sweep_removes_unnamed_stored_files_and_marks_models_without_files(sql_settings, tmp_path):
    kept, orphan, young = (_published(sql_settings, tmp_path, key) for key in ("kept-1", "orphan-1", "young-1"))
    with db.session() as session:  # published two hours ago, except young: a publish whose row is being committed
        session.execute(update(ModelFile).where(ModelFile.artifact_key != "young-1")
                        .values(created_at=datetime.now(timezone.utc) - timedelta(hours=2)))
    live = tiny_model_row(kept, ["a", "b"])
    gone = tiny_model_row("sql:vanished-1", ["a", "b"])
    result = sweep_model_store(sql_settings)
    assert result.removed == [orphan] and result.missing == [gone]
    with db.session() as session:
        assert set(session.scalars(select(ModelFile.artifact_key))) == {"kept-1", "young-1"}
        assert session.get(TrainedModel, gone).files_missing_at is not None
        assert session.get(TrainedModel, live).files_missing_at is None
    assert sweep_model_store(sql_settings).missing == []  # marked once


@pytest.mark.postgres
def test_postgresql_stores_and_streams_the_files(sql_settings, postgres_schema_url, tmp_path, monkeypatch):
    """bytea chunks on PostgreSQL (the production store): several MiB, chunk by chunk, back identical."""
    from core import runtime
    from tests.factories import migrate

    migrate(postgres_schema_url)
    settings = runtime.configure(sql_settings.replace(database_url=postgres_schema_url, model_cache_mb=64))
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1024 * 1024)
    weights = os.urandom(5 * 1024 * 1024 + 17)
    artifact_dir = artifacts.publish(settings, _folder(tmp_path / "src", weights), "job-1")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ModelFileChunk)) == 6 + 1 + 1
    assert (artifacts.local_path(settings, artifact_dir) / "model.safetensors").read_bytes() == weights
    artifacts.discard(settings, artifact_dir)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(ModelFileChunk)) == 0
    # the reconciler's sweep on PostgreSQL: an orphan key past the grace period goes, a named one is judged
    orphan = _published(settings, tmp_path, "orphan-1")
    gone = tiny_model_row("sql:vanished-1", ["a", "b"])
    with db.session() as session:
        from core.model_store import sweep

        result = sweep(session, "sql", grace_s=0)
    assert (result.removed, result.missing) == ([orphan], [gone])
    db.dispose()


def test_a_worker_start_prunes_copies_of_models_deleted_meanwhile(sql_settings, tmp_path):
    live, deleted = (_published(sql_settings, tmp_path, key) for key in ("live-1", "deleted-1"))
    for artifact_dir in (live, deleted):
        artifacts.local_path(sql_settings, artifact_dir)
    tiny_model_row(live, ["a", "b"])
    with db.session() as session:
        session.get(TrainedModel, tiny_model_row(deleted, ["a", "b"])).deleted_at = datetime.now(timezone.utc)
    stale = Path(sql_settings.model_cache_dir) / "downloads" / "killed-download"
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 7 * 3600,) * 2)
    assert artifacts.prune_cache(sql_settings) == ["deleted-1"]
    assert artifacts.cache(sql_settings).keys() == ["live-1"] and not stale.exists()


def test_a_training_removes_scratch_folders_older_than_any_training(sql_settings, tmp_path):
    from worker.jobs import train

    scratch = sql_settings.local_model_dir / "tmp"
    old, young, importing = scratch / "other-job-1", scratch / "running-job-1", scratch / "import-abc"
    for folder in (old, young, importing):
        folder.mkdir(parents=True)
    long_ago = time.time() - sql_settings.train_time_limit_s - 2 * train.STALE_SCRATCH_GRACE_S
    for folder in (old, importing):
        os.utime(folder, (long_ago, long_ago))
    train._remove_earlier_attempts(sql_settings, "job", 1)
    assert sorted(p.name for p in scratch.iterdir()) == ["import-abc", "running-job-1"]
