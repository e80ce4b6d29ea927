"""``flask --app web recount-predictions``: the prediction quota's per-user counter rebuilt from the jobs."""
from __future__ import annotations

from sqlalchemy import select, update

from core import jobs
from core.db import db
from core.results import insert_predictions
from core.schema import JobType, UserCounter
from tests.factories import make_user


def test_recount_predictions_command_rebuilds_the_counters(app):
    owner = make_user("cli-recount").id
    with db.session() as session:
        job_id = jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=owner).id
    with db.session() as session:
        insert_predictions(session, job_id, [{"index": i, "text": "t", "label": "a", "score": 1.0, "scores": {}}
                                             for i in range(4)])
    with db.session() as session:
        session.execute(update(UserCounter).values(predictions_stored=1000))
    result = app.test_cli_runner().invoke(args=["recount-predictions"])
    assert result.exit_code == 0, result.output
    assert "1 user(s) hold stored predictions" in result.output
    with db.session() as session:
        assert session.scalar(select(UserCounter.predictions_stored).where(UserCounter.user_id == owner)) == 4
