"""notifications read and dismissed

A notification (an event of kind ``notification``, to its ``owner_id``) can
be marked read and dismissed by its recipient: two timestamps, empty for
every other event and for the notifications before this (they are unread).

Numbered 0010, not 0009: the batch jobs' migration takes that number on
another branch; whichever lands second revises the other.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
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
