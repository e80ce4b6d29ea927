"""Prediction writes are idempotent on (job_id, index), on SQLite and on PostgreSQL (ON CONFLICT DO NOTHING)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from core import jobs, runtime
from core.db import db
from core.results import count_predictions, insert_predictions, stored_indices
from core.schema import Job, JobType, Prediction, UserCounter
from core.task_types.text_classification import predicted_label_is
from tests.factories import migrate


def _items(indices, label="pos"):
    return [{"index": i, "text": f"t{i}", "label": label, "score": 0.9, "scores": {"pos": 0.9, "neg": 0.1}}
            for i in indices]


def _use_postgres(settings, url: str) -> None:
    migrate(url)  # the schema as production builds it
    runtime.configure(settings.replace(database_url=url))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, settings):
    """The test database: the SQLite file of ``settings``, or a migrated PostgreSQL schema."""
    if request.param == "postgresql":
        _use_postgres(settings, request.getfixturevalue("postgres_schema_url"))
    assert db.engine.dialect.name == request.param
    return request.param


def _new_job() -> str:
    with db.session() as session:
        return jobs.create_job(session, JobType.CLASSIFY, {}).id


def test_duplicate_writes_do_not_duplicate_rows(backend):
    job_id = _new_job()
    with db.session() as session:
        insert_predictions(session, job_id, _items(range(3)))
    with db.session() as session:  # a retried task writes the same chunk again, plus new rows
        insert_predictions(session, job_id, _items(range(5), label="neg"))
    with db.session() as session:  # a duplicate message writes it all again: nothing new, no error
        insert_predictions(session, job_id, _items([4, 1, 3]))
    with db.session() as session:
        assert count_predictions(session, job_id) == 5
        assert stored_indices(session, job_id) == {0, 1, 2, 3, 4}
        labels = session.execute(select(Prediction.index, Prediction.label).where(Prediction.job_id == job_id)
                                 .order_by(Prediction.index)).all()
    assert labels == [(0, "pos"), (1, "pos"), (2, "pos"), (3, "neg"), (4, "neg")]  # first write wins, never rewritten


def test_same_index_twice_in_one_write(backend):
    job_id = _new_job()
    with db.session() as session:
        insert_predictions(session, job_id, _items([0, 1]) + _items([1], label="neg"))
    with db.session() as session:
        assert stored_indices(session, job_id) == {0, 1}
        assert session.scalar(select(Prediction.label).where(Prediction.job_id == job_id, Prediction.index == 1)) == "pos"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_insert_returns_the_rows_it_inserted(backend):
    job_id = _new_job()
    with db.session() as session:
        assert insert_predictions(session, job_id, _items(range(3))) == 3
    with db.session() as session:
        assert insert_predictions(session, job_id, _items(range(5))) == 2
    with db.session() as session:
        assert insert_predictions(session, job_id, _items([4, 1, 3])) == 0
        assert insert_predictions(session, job_id, _items([5, 6]) + _items([6])) == 2


def _stored(job_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(Job.predictions_stored).where(Job.id == job_id))


def test_each_jobs_stored_count_follows_its_rows_and_feeds_the_quota(backend):
    """jobs.predictions_stored moves with the rows an insert really adds (never with skipped duplicates), per job
    of a multi-job insert; each owner's user_counters.predictions_stored with the sum of their jobs' (a batch can
    hold jobs of several users, and of none), and the prediction quota reads it."""
    from core import quotas
    from core.results import insert_predictions_of_jobs
    from tests.factories import make_user

    owner, other = make_user("counter-owner").id, make_user("counter-other").id
    with db.session() as session:
        first, second = (jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=owner).id for _ in range(2))
        others = jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=other).id
        ownerless = jobs.create_job(session, JobType.CLASSIFY, {}).id
    with db.session() as session:
        insert_predictions(session, first, _items(range(3)))
    with db.session() as session:  # a retry's overlapping chunk, and a lane batch of four jobs in one statement
        insert_predictions(session, first, _items(range(5)))
        inserted = insert_predictions_of_jobs(session, {first: _items([4, 5]), second: _items([0, 1]) + _items([1]),
                                                        others: _items(range(4)), ownerless: _items([0])})
        assert inserted == {first: 1, second: 2, others: 4, ownerless: 1}  # per job, the rows really inserted
    with db.session() as session:
        assert [_stored(first), _stored(second)] == [count_predictions(session, first),
                                                     count_predictions(session, second)] == [6, 2]
        assert [_user_stored(owner), _user_stored(other)] == [8, 4]
        assert quotas.usage(session, owner).predictions == 8
        assert quotas.usage(session, other, only={"predictions"}) == quotas.Usage(predictions=4)
    with db.session() as session:  # deleting a job takes its rows and its count out of the quota together
        session.execute(update(Job).where(Job.id.in_([second, ownerless])).values(status="succeeded"))
    with db.session() as session:
        assert jobs.delete_finished(session, second) == 2
        assert jobs.delete_finished(session, ownerless) == 1
    with db.session() as session:
        assert quotas.usage(session, owner).predictions == 6
        assert [_user_stored(owner), _user_stored(other)] == [6, 4]


def _user_stored(user_id: int) -> int | None:
    with db.session() as session:
        return session.scalar(select(UserCounter.predictions_stored).where(UserCounter.user_id == user_id))


def test_a_drifted_counter_is_recounted_from_the_jobs(backend):
    """``recount_predictions`` (``flask --app web recount-predictions``) sets every user's counter to the sum of
    their jobs', whatever it held: a user without a row gets one, a stale row is corrected, and a user who holds
    nothing any more reads 0."""
    from core import quotas
    from tests.factories import make_user

    owner, other, gone = (make_user(name).id for name in ("recount-owner", "recount-other", "recount-gone"))
    with db.session() as session:
        first = jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=owner).id
        second = jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=other).id
    with db.session() as session:
        insert_predictions(session, first, _items(range(3)))
        insert_predictions(session, second, _items(range(2)))
    with db.session() as session:  # drift: a stale count, a missing row, a user whose rows are gone
        session.execute(update(UserCounter).where(UserCounter.user_id == owner).values(predictions_stored=99))
        session.execute(delete(UserCounter).where(UserCounter.user_id == other))
        session.add(UserCounter(user_id=gone, predictions_stored=7))
    with db.session() as session:
        assert quotas.recount_predictions(session) == 2
    assert [_user_stored(owner), _user_stored(other), _user_stored(gone)] == [3, 2, None]
    with db.session() as session:
        assert [quotas.usage(session, user).predictions for user in (owner, other, gone)] == [3, 2, 0]


@pytest.mark.postgres
def test_concurrent_overlapping_writers_on_postgresql(settings, postgres_schema_url):
    """Two attempts writing overlapping chunks at once: the second waits for the first, then skips its rows."""
    _use_postgres(settings, postgres_schema_url)
    job_id = _new_job()
    result: dict = {}

    def second_writer():
        with db.session() as session:
            insert_predictions(session, job_id, _items(range(4, 10), label="neg"))
            result["done"] = True

    thread = threading.Thread(target=second_writer)
    with db.session() as first:  # commits on leaving the block; until then its rows are uncommitted
        insert_predictions(first, job_id, _items(range(0, 6)))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), f"the second writer did not wait for the first one's conflicting rows: {result}"
    thread.join(10)
    assert not thread.is_alive() and result == {"done": True}  # no error: 4 and 5 skipped, 6..9 written
    with db.session() as session:
        assert count_predictions(session, job_id) == 10
        rows = dict(session.execute(select(Prediction.index, Prediction.label).where(Prediction.job_id == job_id)).all())
    assert rows == {**{i: "pos" for i in range(6)}, **{i: "neg" for i in range(6, 10)}}


@pytest.mark.postgres
def test_concurrent_batches_of_two_users_keep_their_counters_exact_on_postgresql(settings, postgres_schema_url):
    """Lane batches holding jobs of the same two users, committed at once from many threads in either user order,
    with deletes of finished jobs among them: no deadlock, no lost update; each user's counter ends as the sum of
    their jobs' counts."""
    from core.results import insert_predictions_of_jobs
    from tests.factories import make_user

    _use_postgres(settings, postgres_schema_url)
    users = [make_user("race-a").id, make_user("race-b").id]
    writers, batches_each = 6, 5
    with db.session() as session:  # per writer and batch: one job of each user (order varies by writer)
        plan = [[[jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=user).id
                  for user in (users if w % 2 else users[::-1])] for _ in range(batches_each)] for w in range(writers)]
        doomed = [jobs.create_job(session, JobType.CLASSIFY, {}, owner_id=users[w % 2]).id for w in range(writers)]
    with db.session() as session:
        insert_predictions_of_jobs(session, {job: _items(range(3)) for job in doomed})
        session.execute(update(Job).where(Job.id.in_(doomed)).values(status="succeeded"))
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(w: int) -> None:
        try:
            start.wait()
            for b, batch in enumerate(plan[w]):
                with db.session() as session:
                    insert_predictions_of_jobs(session, {job: _items(range(b + 1)) for job in batch})
                if b == 2:
                    with db.session() as session:
                        jobs.delete_finished(session, doomed[w])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and not any(thread.is_alive() for thread in threads), errors
    per_user = sum(b + 1 for b in range(batches_each)) * writers  # each writer gives each user 1 + 2 + ... rows
    with db.session() as session:
        from_jobs = dict(session.execute(select(Job.owner_id, func.sum(Job.predictions_stored))
                                         .where(Job.owner_id.in_(users)).group_by(Job.owner_id)).all())
    assert from_jobs == {users[0]: per_user, users[1]: per_user}  # the doomed jobs' rows are gone with them
    assert [_user_stored(user) for user in users] == [per_user, per_user]


def test_unique_constraint_backs_it_up(backend):
    job_id = _new_job()
    with pytest.raises(IntegrityError), db.session() as session:
        for _ in range(2):
            session.add(Prediction(job_id=job_id, index=0, text="x", label="a", score=1.0, scores={}))
            session.flush()


def test_filter_by_predicted_label_single_and_multi_label(backend):
    """Multi-label predictions match a label anywhere in ``labels`` (not only the top one); rows without labels
    (stored as JSON null or []) and single-label rows match on ``label``. The same on both dialects."""
    job_id = _new_job()
    items = [
        {"index": 0, "text": "a", "label": "sport", "score": 0.9, "scores": {}, "labels": ["sport", "news"]},
        {"index": 1, "text": "b", "label": "news", "score": 0.8, "scores": {}, "labels": ["news"]},
        {"index": 2, "text": "c", "label": "tech", "score": 0.3, "scores": {}, "labels": []},
        {"index": 3, "text": "d", "label": "news", "score": 0.9, "scores": {}},  # labels left out: JSON null
        {"index": 4, "text": "e", "label": "o'quote", "score": 0.9, "scores": {}, "labels": ["o'quote", "%"]},
    ]
    with db.session() as session:
        insert_predictions(session, job_id, items)

    def matching(label: str, multi_label: bool) -> list[int]:
        with db.session() as session:
            return session.scalars(select(Prediction.index).where(
                Prediction.job_id == job_id, predicted_label_is(session, label, multi_label=multi_label))
                .order_by(Prediction.index)).all()

    assert matching("news", True) == [0, 1]
    assert matching("news", False) == [1, 3]
    assert matching("tech", True) == [] and matching("tech", False) == [2]
    assert matching("o'quote", True) == [4] and matching("%", True) == [4] and matching("spo", True) == []


def test_a_resumed_jobs_label_counts_are_counted_from_sql(backend):
    """A resumed classify job counts labels from the stored rows: per label for a multi-label model (a text under
    each of its labels), per predicted label otherwise."""
    from tests.web.factories import make_model
    from worker.text_classification import label_distribution as _label_distribution

    multi, single = make_model(params={"multi_label": True}), make_model(name="single")
    rows = [{"index": i, "text": "t", "label": top, "score": 0.9, "scores": {}, "labels": labels}
            for i, (top, labels) in enumerate([("a", ["a", "b"]), ("b", ["b"]), ("c", [])])]
    with db.session() as session:
        job_ids = [jobs.create_job(session, JobType.CLASSIFY, {}, model_id=m).id for m in (multi, single)]
        for job_id in job_ids:
            insert_predictions(session, job_id, rows)
    with db.session() as session:
        assert _label_distribution(session, job_ids[0]) == {"a": 1, "b": 2}
        assert _label_distribution(session, job_ids[1]) == {"a": 1, "b": 1, "c": 1}
