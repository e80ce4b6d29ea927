"""user_counters: per user, the sum of their jobs' predictions_stored, kept with it, so the prediction quota reads
one row per submission instead of summing over every job the user ever ran (a /predict call is a job). A table of
its own, not a column of users: workers write it with every batch of predictions, and a submission's quota check
locks the users row. Filled from the jobs. Run it with the web and the workers stopped: a process of the previous
code would go on storing or deleting rows without counting them here (``flask --app web recount-predictions``
recounts).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 19:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "user_counters",
        sa.Column("user_id", BigId, nullable=False, autoincrement=False),
        sa.Column("predictions_stored", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_user_counters_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_counters")),
    )
    op.execute("INSERT INTO user_counters (user_id, predictions_stored) "
               "SELECT owner_id, sum(predictions_stored) FROM jobs WHERE owner_id IS NOT NULL GROUP BY owner_id")


def downgrade() -> None:
    op.drop_table("user_counters")
