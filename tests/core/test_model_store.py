"""The reconciler's sweep of the model store: orphan folders removed after a grace period, rows whose files are gone
marked (issue 16, item 9)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from core.db import db
from core.schema import TrainedModel
from tests.factories import tiny_model_row
from worker.reconciler import sweep_model_store


def _model_folder(path: Path, *, age_s: float = 0.0) -> Path:
    path.mkdir(parents=True)
    for name in ("bertqueue_config.json", "model.safetensors"):
        (path / name).write_text("{}")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def _missing_at(model_id: int):
    with db.session() as session:
        return session.get(TrainedModel, model_id).files_missing_at


def test_sweep_removes_old_orphans_and_marks_rows_without_files(settings):
    models = Path(settings.model_store) / "models"
    kept = _model_folder(models / "job-1", age_s=7200)
    orphan = _model_folder(models / "job-2", age_s=7200)  # published, but its row never landed
    young = _model_folder(models / "job-3")  # a publish in flight: its row is being committed
    deleted = _model_folder(models / "job-4", age_s=7200)  # a deleted model whose files outlived the delete
    live = tiny_model_row(kept, ["a", "b"])
    gone = tiny_model_row(models / "job-5", ["a", "b"])  # a live row whose files vanished
    with db.session() as session:
        session.get(TrainedModel, tiny_model_row(deleted, ["a", "b"])).deleted_at = session.get(
            TrainedModel, live).created_at

    result = sweep_model_store(settings)
    assert sorted(result.removed) == ["job-2", "job-4"] and result.missing == [gone]
    assert kept.exists() and young.exists() and not orphan.exists() and not deleted.exists()
    assert _missing_at(gone) is not None and _missing_at(live) is None
    assert sweep_model_store(settings).missing == []  # marked once

    _model_folder(models / "job-5")  # restored from a backup: the mark goes
    assert sweep_model_store(settings).restored == [gone] and _missing_at(gone) is None


def test_sweep_judges_nothing_without_the_store(settings, tmp_path):
    """A reconciler that does not see the model store (no shared volume) must not mark every model missing."""
    model_id = tiny_model_row(tmp_path / "elsewhere", ["a", "b"])
    result = sweep_model_store(settings.replace(model_store=str(tmp_path / "not-mounted")))
    assert (result.removed, result.missing) == ([], []) and _missing_at(model_id) is None
