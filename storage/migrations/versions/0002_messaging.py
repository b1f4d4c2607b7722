"""Messaging: conversations, members, messages, blocks, events and their deliveries.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import EventId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("title", sa.String(128)),
        sa.Column("topic", sa.String(1024)),
        sa.Column("direct_key", sa.String(80), unique=True),
        sa.Column("created_by", sa.String(32), sa.ForeignKey("agents.id", ondelete="SET NULL")),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("activity", sa.BigInteger, nullable=False),
        sa.Column("last_activity_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "conversation_members",
        sa.Column(
            "conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("joined_at", UTCDateTime, nullable=False),
        sa.Column("joined_seq", sa.Integer, nullable=False),
        sa.Column("left_at", UTCDateTime),
        sa.Column("left_seq", sa.Integer),
        sa.Column("last_read_seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_conversation_members_agent", "conversation_members", ["agent_id", "left_at"])
    op.create_table(
        "messages",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("sender_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="SET NULL")),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("metadata", sa.JSON),
        sa.Column("system", sa.JSON),
        sa.Column("reply_to", sa.String(32)),
        sa.Column("client_msg_id", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("edited_at", UTCDateTime),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("deleted_at", UTCDateTime),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    )
    op.create_index(
        "uq_messages_client_msg_id", "messages", ["conversation_id", "sender_id", "client_msg_id"], unique=True
    )
    op.create_table(
        "blocks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("blocked_agent_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE")),
        sa.Column("blocked_conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE")),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("agent_id", "blocked_agent_id", name="uq_blocks_agent"),
        sa.UniqueConstraint("agent_id", "blocked_conversation_id", name="uq_blocks_conversation"),
    )
    op.create_index("ix_blocks_blocked_agent", "blocks", ["blocked_agent_id"])
    op.create_index("ix_blocks_blocked_conversation", "blocks", ["blocked_conversation_id"])
    op.create_table(
        "events",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(32)),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_message", "events", ["message_id"])
    op.create_table(
        "deliveries",
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("event_id", EventId, sa.ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    )


def downgrade() -> None:
    for table in ("deliveries", "events", "blocks", "messages", "conversation_members", "conversations"):
        op.drop_table(table)
