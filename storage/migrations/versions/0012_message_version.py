"""A version on each message row, bumped by every change to it.

The hub keeps the views of messages it has read (`hub.services.message_views`); a page reads each
row's id and version and builds again only the views whose version moved. `revision` will not do: it
counts edits, which a client sees, and a deleted attachment changes a message without one.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: no table rewrite on PostgreSQL 11+ or SQLite, however many messages there are.
    op.add_column("messages", sa.Column("version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("version")
