"""trained_models.files_missing_at: when the reconciler's sweep found a live model's files gone

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("files_missing_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.drop_column("files_missing_at")
