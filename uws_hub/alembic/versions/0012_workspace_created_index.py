"""an index on when workspaces were created

The REST API lists workspaces oldest first by default (``ORDER BY created_at,
id``): without an index, every page sorted every row the reader may see
(10,000 workspaces: a top-N sort of all of them for each page of 50).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_uws_workspaces_created_at", "uws_workspaces", ["created_at", "id"])


def downgrade():
    op.drop_index("ix_uws_workspaces_created_at", table_name="uws_workspaces")
