"""users + api_tokens; owner_id on datasets, jobs and trained_models; jobs.sends (how often a message was sent)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 07:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OWNED = ("datasets", "jobs", "trained_models")
SAMPLE_FILES = ("sample_tweets.csv", "sample_tweets_multitask.csv")  # what `make run` loads (scripts/run_stack.py)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    for table in OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner_id", BigId, nullable=True))
            batch_op.create_foreign_key(op.f(f"fk_{table}_owner_id_users"), "users", ["owner_id"], ["id"], ondelete="SET NULL")
            if table == "jobs":  # the quota counts a user's jobs by status: one index serves both
                batch_op.create_index("ix_jobs_owner_status", ["owner_id", "status"])
            else:
                batch_op.create_index(op.f(f"ix_{table}_owner_id"), ["owner_id"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sends", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Rows from before accounts have no owner: only the bundled samples become readable by every user; every
    # other one stays with the admins (an administrator can hand it to its user).
    datasets = sa.table("datasets", sa.column("owner_id"), sa.column("filename"), sa.column("shared"))
    op.execute(
        datasets.update()
        .where(datasets.c.owner_id.is_(None), datasets.c.filename.in_(SAMPLE_FILES))
        .values(shared=True)
    )
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.drop_constraint("name_version", type_="unique")
        batch_op.create_unique_constraint("owner_name_version", ["owner_id", "name", "version"])


def downgrade() -> None:
    with op.batch_alter_table("trained_models", schema=None) as batch_op:
        batch_op.drop_constraint("owner_name_version", type_="unique")
        batch_op.create_unique_constraint("name_version", ["name", "version"])
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("shared")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("sends")
    for table in reversed(OWNED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index("ix_jobs_owner_status" if table == "jobs" else op.f(f"ix_{table}_owner_id"))
            batch_op.drop_constraint(op.f(f"fk_{table}_owner_id_users"), type_="foreignkey")
            batch_op.drop_column("owner_id")
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
