"""Writing and reading predictions. Inserts are idempotent on (job_id, index).

What a prediction row holds is its task type's business (``core.task_types``: ``prediction_columns`` builds the
columns, ``label_condition`` filters them); this module only stores and counts rows, and keeps each job's
``predictions_stored`` equal to its rows, and each user's ``user_counters.predictions_stored`` the sum of their
jobs' (the prediction quota reads that instead of counting rows)."""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from .schema import Job, Prediction, UserCounter

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def insert_predictions(session: Session, job_id: str, items: Iterable[dict]) -> int:
    """Insert prediction rows for ``job_id``; rows whose (job_id, index) exist already are skipped.

    Each item: ``{"index", "text", "label", "score", "scores", "tasks"?, "labels"?, "result"?, "text_pair"?,
    "row_id"?}`` (``label`` ... ``result``: what the task type's ``prediction_columns`` returns for the row;
    ``text_pair``: a pair model's second text). Returns rows actually inserted.
    Does not commit: the caller commits together with the job's heartbeat/progress.
    """
    return insert_predictions_of_jobs(session, {job_id: items}).total()


def insert_predictions_of_jobs(session: Session, items_by_job: dict[str, Iterable[dict]]) -> Counter:
    """:func:`insert_predictions` for several jobs in one statement (the /predict lane's batch of jobs); how many
    rows were inserted per job (a job whose rows an earlier attempt stored counts fewer than its items)."""
    return insert_columns_of_jobs(session, {job_id: [stored_columns(item) for item in items]
                                            for job_id, items in items_by_job.items()})


def insert_columns_of_jobs(session: Session, columns_by_job: dict[str, list[dict]]) -> Counter:
    """:func:`insert_predictions_of_jobs` for rows already in their stored shape (:func:`stored_columns`): a caller
    that also relays the rows (the /predict lane) shapes each once."""
    rows = [{"job_id": job_id, **columns} for job_id, shaped in columns_by_job.items() for columns in shaped]
    if not rows:
        return Counter()
    insert = _INSERTS.get(session.get_bind().dialect.name)
    if insert is None:  # another backend: fall back to skipping known indices by hand
        known = {(p.job_id, p.index) for p in session.execute(
            select(Prediction.job_id, Prediction.index).where(Prediction.job_id.in_(list(columns_by_job))))}
        fresh = [r for r in rows if (r["job_id"], r["index"]) not in known]
        session.add_all(Prediction(**r) for r in fresh)
        inserted = [r["job_id"] for r in fresh]
    else:
        # executemany with one cached statement (SQLAlchemy batches it into multi-row INSERTs): compiling a fresh
        # ``.values(rows)`` statement with thousands of parameters per chunk cost more CPU than the insert itself.
        # RETURNING says what was inserted: under psycopg 3 an executemany reports rowcount -1.
        inserted = list(session.connection().execute(_insert_new_rows(insert), rows).scalars())
    counts = Counter(inserted)
    if counts:  # same transaction as the rows: the counts can never disagree with them
        connection = session.connection()
        connection.execute(_COUNT_STORED, [{"job": job, "n": n} for job, n in counts.items()])
        by_owner: Counter = Counter()
        for job, owner in connection.execute(_OWNERS, {"jobs": list(counts)}):
            if owner is not None:
                by_owner[owner] += counts[job]
        count_for_users(session, by_owner)
    return counts


def count_for_users(session: Session, stored: dict[int, int]) -> None:
    """Add ``stored[user]`` (negative: rows deleted) to each user's ``user_counters.predictions_stored``, creating
    the row where there is none; does not commit. Users are written in id order, so two transactions that count
    for the same users lock their rows alike (no deadlock), and after the jobs they concern (every writer locks a
    job's row first: the claim, the heartbeat, the delete)."""
    rows = [{"counted_user": user, "n": stored[user]} for user in sorted(stored) if stored[user]]
    if not rows:
        return
    connection = session.connection()
    insert = _INSERTS.get(connection.dialect.name)
    if insert is not None:
        connection.execute(_add_to_counter(insert), rows)
        return
    for row in rows:  # another backend: update, else create
        if connection.execute(_ADD_TO_COUNTER, row).rowcount == 0:
            connection.execute(UserCounter.__table__.insert().values(user_id=row["counted_user"],
                                                                     predictions_stored=row["n"]))


@functools.cache
def _insert_new_rows(insert) -> Insert:
    """INSERT ... ON CONFLICT (job_id, index) DO NOTHING RETURNING job_id, built once per dialect."""
    return (insert(Prediction.__table__).on_conflict_do_nothing(index_elements=["job_id", "index"])
            .returning(Prediction.__table__.c.job_id))


# jobs.predictions_stored += n; the jobs' owners (count_for_users: user_counters, which core.quotas.usage reads)
_COUNT_STORED = (update(Job.__table__).where(Job.__table__.c.id == bindparam("job"))
                 .values(predictions_stored=Job.__table__.c.predictions_stored + bindparam("n")))
_OWNERS = select(Job.__table__.c.id, Job.__table__.c.owner_id).where(
    Job.__table__.c.id.in_(bindparam("jobs", expanding=True)))
_COUNTERS = UserCounter.__table__
_ADD_TO_COUNTER = (update(_COUNTERS).where(_COUNTERS.c.user_id == bindparam("counted_user"))
                   .values(predictions_stored=_COUNTERS.c.predictions_stored + bindparam("n")))


@functools.cache
def _add_to_counter(insert) -> Insert:
    """INSERT ... ON CONFLICT (user_id) DO UPDATE SET predictions_stored = predictions_stored + n, built once per
    dialect."""
    statement = insert(_COUNTERS).values(user_id=bindparam("counted_user"), predictions_stored=bindparam("n"))
    return statement.on_conflict_do_update(
        index_elements=["user_id"],
        set_={"predictions_stored": _COUNTERS.c.predictions_stored + statement.excluded.predictions_stored})


def stored_columns(item: dict) -> dict:
    """The columns a prediction row stores for ``item`` (all but ``id`` and ``job_id``), as they read back."""
    return {
        "index": item["index"],
        "text": item["text"],
        "label": item["label"],
        "score": float(item["score"]),
        "scores": item["scores"],
        "tasks": item.get("tasks"),
        "labels": item.get("labels"),
        "result": item.get("result"),
        "text_pair": item.get("text_pair"),
        "row_id": item.get("row_id"),
    }


def stored_indices(session: Session, job_id: str) -> set[int]:
    """Indices already classified for ``job_id`` (lets a retried job resume where it stopped)."""
    return set(session.scalars(select(Prediction.index).where(Prediction.job_id == job_id)))


def count_predictions(session: Session, job_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id)) or 0

