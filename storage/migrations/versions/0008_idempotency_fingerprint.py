"""A fingerprint of each idempotent send, so a retry that asks for something else is a conflict.

`messages.request_hash` is the SHA-256 of what a send with a `client_msg_id` asked for (body,
content type, metadata, reply_to, attachments). The same key with the same request returns the
first message; with another request it is a `conflict`. Messages sent before this migration have
none, and their keys keep returning the first message whatever is sent.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("request_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("request_hash")
