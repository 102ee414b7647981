"""notifications read and dismissed

A notification (an event of kind ``notification``, to its ``owner_id``) can
be marked read and dismissed by its recipient: two timestamps, empty for
every other event and for the notifications before this (they are unread).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("uws_events") as batch:
        batch.add_column(sa.Column("read_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("dismissed_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("uws_events") as batch:
        batch.drop_column("dismissed_at")
        batch.drop_column("read_at")
