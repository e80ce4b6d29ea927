"""trained_models.source ("trained" | "imported") and trained_models.deleted_at (a deleted model keeps its row)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 12:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), server_default="trained", nullable=False))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("source")
