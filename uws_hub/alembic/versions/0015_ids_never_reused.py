"""ids are never reused on SQLite

A SQLite table whose key is ``INTEGER PRIMARY KEY`` gives a new row the
highest id in the table plus one: delete the rows with the highest ids and the
next insert reuses one. uws-hub names things outside its rows by these ids,
and a reused id inherited what was left of its first owner: a job's log, run
file and exit record in the job log dir, its results directory, its events and
its UWS URL; a workspace's JupyterHub roles (``uws-ws-<id>-editor`` and
``-viewer``, dropped after the workspace, in the background) and its POSIX
group; a share's URLs, events and interrupted copy; an event's id, which
clients resume their event streams after. These tables are recreated with
``AUTOINCREMENT`` (SQLite then never hands out an id twice), and their
counters start above every id the database still names, so the ids used and
deleted before the upgrade are not reused either. PostgreSQL's sequences never
reuse a number: nothing to do there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: the tables whose ids name things outside their rows
TABLES = ("uws_workspaces", "uws_jobs", "uws_shares", "uws_events")

#: where else the database names an id of each table (beside the table itself)
USED_IDS = {
    "uws_workspaces": (
        "SELECT max(workspace_id) FROM uws_events",
        "SELECT max(copy_workspace_id) FROM uws_shares",
    ),
    "uws_jobs": ("SELECT max(job_id) FROM uws_events",),
    "uws_shares": (
        "SELECT max(CAST(json_extract(data, '$.share_id') AS INTEGER)) FROM uws_events WHERE json_valid(data)",
    ),
    "uws_events": (),
}

#: a workspace's JupyterHub roles (uws_hub.scopes.ROLE_PREFIX), outliving it until dropped
WORKSPACE_ROLE = re.compile(r"uws-ws-(\d+)-")


def _workspaces_with_roles(bind) -> list[int]:
    if not sa.inspect(bind).has_table("roles"):
        return []
    names = bind.execute(sa.text("SELECT name FROM roles WHERE name LIKE 'uws-ws-%'")).scalars()
    return [int(m.group(1)) for m in map(WORKSPACE_ROLE.match, names) if m]


def _seed(bind) -> None:
    """Start each table's counter above every id the database still names."""
    for table, queries in USED_IDS.items():
        used = [bind.execute(sa.text(f"SELECT max(id) FROM {table}")).scalar()]
        used += [bind.execute(sa.text(query)).scalar() for query in queries]
        if table == "uws_workspaces":
            used += _workspaces_with_roles(bind)
        highest = max((int(n) for n in used if n is not None), default=0)
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :table"), {"table": table})
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :seq)"), {"table": table, "seq": highest}
        )


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    _seed(bind)


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
