"""datasets.format + datasets.profile (computed once at upload); predictions.row_id (the input row's id);
trained_models.serving (per-model serving defaults, e.g. int8 quantization)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 05:15:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("format", sa.String(length=16), nullable=False, server_default="csv"))
        batch_op.add_column(sa.Column("profile", sa.JSON(), nullable=True))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("row_id", sa.Text(), nullable=True))
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("serving", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.drop_column("serving")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("row_id")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("profile")
        batch_op.drop_column("format")
