"""what the HuBMAP-compatible API keeps per workspace

A workspace's default job type and the names its HuBMAP create request
asked for (uws_hub.protocols.hubmap.store), deleted with the workspace.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "uws_hubmap_workspaces",
        sa.Column(
            "workspace_id",
            sa.Integer(),
            sa.ForeignKey(
                "uws_workspaces.id", name="fk_uws_hubmap_workspaces_workspace_id_uws_workspaces", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("default_job_type", sa.String(length=63), nullable=True),
        sa.Column("request_details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("workspace_id", name="pk_uws_hubmap_workspaces"),
    )


def downgrade():
    op.drop_table("uws_hubmap_workspaces")
