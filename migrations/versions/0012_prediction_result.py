"""predictions.result: the task type's result JSON per prediction (core.task_types); the older columns stay filled

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable, no default and no backfill: existing rows keep NULL and are read from label/score/scores/labels/tasks
    # (adding a nullable column without a default rewrites no row on PostgreSQL)
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("result")
