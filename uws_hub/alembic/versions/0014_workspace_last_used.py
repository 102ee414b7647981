"""when each workspace was last used, stored and indexed

My workspaces and All workspaces sort by last use by default: when a job was
last launched in the workspace, else when it was made. That was computed from
the jobs for every row on every page (a subquery per workspace: 10,000
workspaces, a sort of all of them for each page of 50). It is now a column,
set when a job is launched, and indexed with the id (the order's tie-break).
The workspaces from before get it from their jobs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_workspaces") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    ws = sa.table(
        "uws_workspaces",
        sa.column("id", sa.Integer),
        sa.column("created_at", sa.DateTime),
        sa.column("last_used_at", sa.DateTime),
    )
    jobs = sa.table("uws_jobs", sa.column("workspace_id", sa.Integer), sa.column("created_at", sa.DateTime))
    last_launch = sa.select(sa.func.max(jobs.c.created_at)).where(jobs.c.workspace_id == ws.c.id).scalar_subquery()
    op.get_bind().execute(sa.update(ws).values(last_used_at=sa.func.coalesce(last_launch, ws.c.created_at)))
    with op.batch_alter_table("uws_workspaces") as batch:
        batch.alter_column("last_used_at", existing_type=sa.DateTime(), nullable=False)
    op.create_index("ix_uws_workspaces_last_used_at", "uws_workspaces", ["last_used_at", "id"])


def downgrade():
    op.drop_index("ix_uws_workspaces_last_used_at", table_name="uws_workspaces")
    with op.batch_alter_table("uws_workspaces") as batch:
        batch.drop_column("last_used_at")
