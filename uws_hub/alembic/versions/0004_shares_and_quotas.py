"""shares, quota overrides and usage

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _fk(column: str, target: str, table: str, nullable: bool) -> sa.Column:
    ref_table = target.split(".")[0]
    return sa.Column(
        column,
        sa.Integer(),
        sa.ForeignKey(target, name=f"fk_{table}_{column}_{ref_table}", ondelete="CASCADE"),
        nullable=nullable,
    )


def upgrade():
    op.create_table(
        "uws_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        _fk("workspace_id", "uws_workspaces.id", "uws_shares", False),
        _fk("owner_id", "users.id", "uws_shares", False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=True),
        _fk("user_id", "users.id", "uws_shares", True),
        _fk("group_id", "groups.id", "uws_shares", True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("responded_at", sa.DateTime(), nullable=True),
        sa.Column("copy_name", sa.String(255), nullable=True),
        sa.Column("copy_slug", sa.String(63), nullable=True),
        sa.Column("copy_state", sa.String(16), nullable=True),
        sa.Column("copy_attempts", sa.Integer(), nullable=False),
        sa.Column("copy_error", sa.Text(), nullable=True),
        sa.Column("copy_bytes", sa.BigInteger(), nullable=True),
        sa.Column("copy_workspace_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_uws_shares"),
    )
    for column in ("workspace_id", "owner_id", "user_id", "group_id", "copy_state"):
        op.create_index(f"ix_uws_shares_{column}", "uws_shares", [column])
    for column in ("user_id", "group_id"):
        where = f"kind = 'collaborate' AND {column} IS NOT NULL"
        op.create_index(
            f"uq_uws_shares_collaborate_{column}",
            "uws_shares",
            ["workspace_id", column],
            unique=True,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )
    op.create_table(
        "uws_quota_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        _fk("user_id", "users.id", "uws_quota_overrides", True),
        _fk("group_id", "groups.id", "uws_quota_overrides", True),
        sa.Column("disk_bytes", sa.BigInteger(), nullable=True),
        sa.Column("core_seconds", sa.BigInteger(), nullable=True),
        sa.Column("concurrent_jobs", sa.Integer(), nullable=True),
        sa.Column("max_cpus", sa.Integer(), nullable=True),
        sa.Column("max_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_uws_quota_overrides"),
        sa.UniqueConstraint("user_id", name="uq_uws_quota_overrides_user_id"),
        sa.UniqueConstraint("group_id", name="uq_uws_quota_overrides_group_id"),
    )
    op.create_table(
        "uws_usage",
        _fk("user_id", "users.id", "uws_usage", False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("core_seconds", sa.BigInteger(), nullable=False),
        sa.Column("measured_at", sa.DateTime(), nullable=False),
        sa.Column("core_warned_period", sa.DateTime(), nullable=True),
        sa.Column("disk_warned_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_uws_usage"),
    )


def downgrade():
    op.drop_table("uws_usage")
    op.drop_table("uws_quota_overrides")
    op.drop_table("uws_shares")
