"""jobs.type allows "evaluate"; jobs.eta_at; predictions.labels (multi-label) and predictions.text_pair (pairs)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TYPES_BEFORE = ("train", "classify")
TYPES_AFTER = (*TYPES_BEFORE, "evaluate")


def _types(values: tuple[str, ...]) -> str:
    return f"type IN ({', '.join(repr(v) for v in values)})"


def _replace_type_check(values: tuple[str, ...]) -> None:
    # Batch mode: PostgreSQL alters the constraint in place; SQLite rebuilds the table with the new CHECK.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_jobs_type"), type_="check")
        batch_op.create_check_constraint(op.f("ck_jobs_type"), _types(values))


def upgrade() -> None:
    _replace_type_check(TYPES_AFTER)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("eta_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_pair", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("labels")
        batch_op.drop_column("text_pair")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("eta_at")
    # evaluation jobs cannot exist under the old constraint: they go, as the feature does
    jobs = sa.table("jobs", sa.column("type"))
    op.execute(jobs.delete().where(jobs.c.type == "evaluate"))
    _replace_type_check(TYPES_BEFORE)
