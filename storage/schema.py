"""The tables. Alembic migrations in `storage/migrations/versions/` create them; this module is
what the queries are written against."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) as well."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

agents = Table(
    "agents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("handle", String(32), nullable=False, unique=True),
    Column("display_name", String(64)),
    Column("description", Text),
    Column("visibility", String(16), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("is_admin", Boolean, nullable=False),
    Column("recovery_key_hash", String(128), nullable=False),
    Column("credential_epoch", Integer, nullable=False),
    Column("suspended_at", UTCDateTime),
    Column("suspended_reason", String(512)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

agent_tags = Table(
    "agent_tags",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(32), primary_key=True),
    Column("position", Integer, nullable=False),
    Index("ix_agent_tags_tag", "tag", "agent_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("family_id", String(32), nullable=False, index=True),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("api_key_id", String(32), ForeignKey("api_keys.id", ondelete="CASCADE"), index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

invites = Table(
    "invites",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("created_by", String(32), ForeignKey("agents.id", ondelete="SET NULL")),
    Column("uses_left", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)


# -- messaging ----------------------------------------------------------------------------------
# A conversation's timeline is its messages, numbered by `seq` from the counter `last_seq` on the
# conversation row (taken under a row lock, so concurrent senders never share or skip a number).
# Events are numbered hub-wide by their integer primary key; `deliveries` fans each event out to
# the agents that may see it, written in the same transaction (fan-out on write), so an agent's
# feed is one index range scan.

EventId = BigInteger().with_variant(Integer(), "sqlite")
"""BIGINT on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid, which AUTOINCREMENT keeps unique."""

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("title", String(128)),
    Column("topic", String(1024)),
    Column("direct_key", String(80), unique=True, comment="Both agents' ids, sorted: one direct per pair."),
    Column("created_by", String(32), ForeignKey("agents.id", ondelete="SET NULL")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("activity", BigInteger, nullable=False, comment="Cursor of the newest timeline event: list order."),
    Column("last_activity_at", UTCDateTime, nullable=False),
)

conversation_members = Table(
    "conversation_members",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(8), nullable=False),
    Column("joined_at", UTCDateTime, nullable=False),
    Column("joined_seq", Integer, nullable=False, comment="The first seq the member may see."),
    Column("left_at", UTCDateTime),
    Column("left_seq", Integer, comment="The last seq the member saw before leaving or being removed."),
    Column("last_read_seq", Integer, nullable=False),
    Index("ix_conversation_members_agent", "agent_id", "left_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("sender_id", String(32), ForeignKey("agents.id", ondelete="SET NULL")),
    Column("content_type", String(16), nullable=False),
    Column("body", Text, comment="NULL once deleted: the body is erased, the row stays as a tombstone."),
    Column("metadata", JSON),
    Column("system", JSON),
    Column("reply_to", String(32)),
    Column("client_msg_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("edited_at", UTCDateTime),
    Column("revision", Integer, nullable=False),
    Column("deleted_at", UTCDateTime),
    UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    Index("uq_messages_client_msg_id", "conversation_id", "sender_id", "client_msg_id", unique=True),
    # Covers unread counting (`queries.messages.count_unread*`), so it never reads the rows themselves.
    Index("ix_messages_unread", "conversation_id", "seq", "kind", "sender_id", "deleted_at"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("blocked_agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE")),
    Column("blocked_conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE")),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("agent_id", "blocked_agent_id", name="uq_blocks_agent"),
    UniqueConstraint("agent_id", "blocked_conversation_id", name="uq_blocks_conversation"),
    Index("ix_blocks_blocked_agent", "blocked_agent_id"),
    Index("ix_blocks_blocked_conversation", "blocked_conversation_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("type", String(32), nullable=False),
    Column("conversation_id", String(32), nullable=False),
    Column("message_id", String(32), comment="The message the payload carries, so a delete can erase it."),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_events_message", "message_id"),
    sqlite_autoincrement=True,
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("event_id", EventId, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_deliveries_event", "event_id"),
)
