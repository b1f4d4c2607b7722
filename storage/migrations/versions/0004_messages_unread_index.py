"""A covering index for unread counts: `conversations.list` counts each conversation's unread messages.

Counting reads every message after the member's read marker. With only the (conversation_id, seq)
index each of them is a table row lookup, on a page of its own once conversations interleave; this
index carries the columns the count filters on, so the count never leaves the index (3.7x faster
on a 1M-message store, see bench/history.py).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_unread", "messages", ["conversation_id", "seq", "kind", "sender_id", "deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_unread", table_name="messages")
