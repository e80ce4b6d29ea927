"""jobs.predictions_stored: each job's count of stored prediction rows (the prediction quota sums it per user
instead of counting predictions on every classify submission), filled from the rows already stored. Run it with
the workers stopped: a worker of the previous code would go on storing rows without counting them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 11:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("predictions_stored", sa.BigInteger(), server_default="0", nullable=False))
    op.execute("UPDATE jobs SET predictions_stored = "
               "(SELECT count(*) FROM predictions WHERE predictions.job_id = jobs.id) "
               "WHERE EXISTS (SELECT 1 FROM predictions WHERE predictions.job_id = jobs.id)")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("predictions_stored")
