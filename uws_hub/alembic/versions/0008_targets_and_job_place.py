"""workspace targets, a job's url and node stored

Workspaces get a target (``ready`` or ``deleted``) like jobs, so that a
deletion is reconciled: a hub that stops mid-delete finishes it after its
restart. Workspaces being deleted when this runs get ``deleted``.

A job's URL through the proxy and the node it runs on are stored when it
starts running, so that reading a job never asks a live spawner; running jobs
get them on the reconciler's next scan.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_workspaces") as batch:
        batch.add_column(sa.Column("target", sa.String(32), nullable=False, server_default="ready"))
    ws = sa.table("uws_workspaces", sa.column("status", sa.String), sa.column("target", sa.String))
    op.get_bind().execute(sa.update(ws).where(ws.c.status == "deleting").values(target="deleted"))
    with op.batch_alter_table("uws_jobs") as batch:
        batch.add_column(sa.Column("url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("node", sa.String(255), nullable=True))


def downgrade():
    with op.batch_alter_table("uws_jobs") as batch:
        batch.drop_column("node")
        batch.drop_column("url")
    with op.batch_alter_table("uws_workspaces") as batch:
        batch.drop_column("target")
