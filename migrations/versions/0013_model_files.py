"""model_files + model_file_chunks: the SQL model store (MODEL_STORE=sql, core.artifacts), model files in chunks

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 23:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "model_files",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("artifact_key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_files")),
        sa.UniqueConstraint("artifact_key", "name", name="artifact_file"),
    )
    op.create_table(
        "model_file_chunks",
        sa.Column("file_id", BigId, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["model_files.id"], name=op.f("fk_model_file_chunks_file_id_model_files"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("file_id", "seq", name=op.f("pk_model_file_chunks")),
    )


def downgrade() -> None:
    op.drop_table("model_file_chunks")
    op.drop_table("model_files")
