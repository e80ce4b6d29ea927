"""users.session_epoch: web sessions carry it and end when it changes (password change, disable, log out everywhere)

Revision ID: 0007_d
Revises: 0006
Create Date: 2026-12-04 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_d"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_epoch", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
