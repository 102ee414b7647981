"""workspaces and jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE = "('pending', 'queued', 'running', 'stopping')"


def upgrade():
    op.create_table(
        "uws_workspaces",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "owner_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_uws_workspaces_owner_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("disk_usage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("usage_measured_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_uws_workspaces"),
        sa.UniqueConstraint("owner_id", "slug", name="uq_uws_workspaces_owner_slug"),
    )
    op.create_index("ix_uws_workspaces_owner_id", "uws_workspaces", ["owner_id"])
    op.create_table(
        "uws_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.Integer(),
            sa.ForeignKey(
                "uws_workspaces.id", name="fk_uws_jobs_workspace_id_uws_workspaces", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column(
            "owner_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_uws_jobs_owner_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_type", sa.String(63), nullable=False),
        sa.Column("resource", sa.String(63), nullable=False),
        sa.Column("interactive", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=True),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=True),
        sa.Column("running_at", sa.DateTime(), nullable=True),
        sa.Column("stopping_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_uws_jobs"),
    )
    op.create_index("ix_uws_jobs_workspace_id", "uws_jobs", ["workspace_id"])
    op.create_index("ix_uws_jobs_owner_id", "uws_jobs", ["owner_id"])
    op.create_index("ix_uws_jobs_status", "uws_jobs", ["status"])
    op.create_index(
        "uq_uws_jobs_one_active_per_workspace",
        "uws_jobs",
        ["workspace_id"],
        unique=True,
        sqlite_where=sa.text(f"interactive = 1 AND status IN {ACTIVE}"),
        postgresql_where=sa.text(f"interactive AND status IN {ACTIVE}"),
    )


def downgrade():
    op.drop_table("uws_jobs")
    op.drop_table("uws_workspaces")
