"""Prediction writes are idempotent on (job_id, index)."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from core import jobs
from core.db import db
from core.results import count_predictions, insert_predictions, stored_indices
from core.schema import JobType, Prediction


def _items(indices):
    return [{"index": i, "text": f"t{i}", "label": "pos", "score": 0.9, "scores": {"pos": 0.9, "neg": 0.1}}
            for i in indices]


def test_duplicate_writes_do_not_duplicate_rows(settings):
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.CLASSIFY, {}).id
    with db.session() as session:
        assert insert_predictions(session, job_id, _items(range(3))) == 3
    with db.session() as session:  # a retried task writes the same chunk again, plus new rows
        assert insert_predictions(session, job_id, _items(range(5))) == 2
    with db.session() as session:
        assert count_predictions(session, job_id) == 5
        assert stored_indices(session, job_id) == {0, 1, 2, 3, 4}


def test_unique_constraint_backs_it_up(settings):
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.CLASSIFY, {}).id
    with pytest.raises(IntegrityError), db.session() as session:
        for _ in range(2):
            session.add(Prediction(job_id=job_id, index=0, text="x", label="a", score=1.0, scores={}))
            session.flush()
