"""users.predictions_stored: the sum of each user's jobs' predictions_stored, kept with it, so the prediction quota
reads one row per submission instead of summing over every job the user ever ran (a /predict call is a job).
Filled from the jobs. Run it with the workers stopped: a worker of the previous code would go on storing rows
without counting them here.

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


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("predictions_stored", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE users SET predictions_stored = "
               "(SELECT sum(jobs.predictions_stored) FROM jobs WHERE jobs.owner_id = users.id) "
               "WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.owner_id = users.id)")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("predictions_stored")
