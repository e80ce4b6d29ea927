"""trained_models.size_bytes: a model's files in MODEL_STORE, so a user's storage quota is one SQL SUM

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for models published before: their files may live on worker hosts this migration cannot see
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.drop_column("size_bytes")
