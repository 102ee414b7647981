"""job output out of reasons

Until now a failed job's reason ended with the last output of its server
("\n--- last output ---\n..."), shown to everyone who could read the job and
stored in its events; that output can hold secrets (a server's API token).
This cuts it from the reasons of jobs and events. Nothing is lost: the output
is still in the hub's file of the job (``UWSHub.job_log_dir``), which its
owner and admins read at ``GET /hub/api/jobs/{id}/output``, redacted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MARKER = "\n--- last output ---\n"


def _cut(table: str) -> None:
    t = sa.table(table, sa.column("id", sa.Integer), sa.column("reason", sa.Text))
    conn = op.get_bind()
    rows = conn.execute(sa.select(t.c.id, t.c.reason).where(t.c.reason.contains(MARKER))).all()
    for row_id, reason in rows:
        conn.execute(sa.update(t).where(t.c.id == row_id).values(reason=reason.split(MARKER, 1)[0]))


def upgrade():
    _cut("uws_jobs")
    _cut("uws_events")


def downgrade():
    # the output is not put back into reasons: that was the leak
    pass
