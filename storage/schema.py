"""The tables. Alembic migrations in `storage/migrations/versions/` create them; this module is
what the queries are written against."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


def _naive_utc(value: datetime) -> datetime:
    """`value` in UTC, without its zone: how SQLite keeps a time."""
    return value.astimezone(UTC).replace(tzinfo=None)


class _SqliteText:
    """SQLite's DATETIME text of a time ("2026-12-05 09:30:00.000000" in UTC), written by `isoformat` in C
    (SQLAlchemy's %-formatting took twice as long).

    The last time written is kept with its text: a send binds the same `now` three times (the message,
    its event, the conversation's activity), and a conversion takes 1.8 µs, a repeat 0.1. Kept by
    identity (a datetime is immutable), as one tuple: threads may call this at once.
    """

    def __init__(self) -> None:
        self._last: tuple[datetime | None, str] = (None, "")

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        last, text = self._last
        if value is last:
            return text
        text = _naive_utc(value).isoformat(" ", "microseconds")
        self._last = (value, text)
        return text


_sqlite_text = _SqliteText()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) as well."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return _naive_utc(value) if dialect.name == "sqlite" else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EncodedJson(str):
    """A JSON column's value already encoded as JSON text (by pydantic's serializer, say): the store
    writes it as it is, instead of encoding a Python value again (see `store.create_store_engine`)."""


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
    Column("attachments", JSON, comment="The files it carries, as shown (message_attachments has the links)."),
    Column("request_hash", String(64), comment="SHA-256 of the send that made it, kept with a client_msg_id: a retry "
           "that asks for something else is a conflict. NULL once deleted (it goes with the body)."),
    Column("version", Integer, nullable=False, server_default="0",
           comment="Bumped by every change to the row: a view of it kept in memory is stale once this moves."),
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
    Column("subject_id", String(32),
           comment="The message or memory whose content the payload carries, so erasing it reaches the event."),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_events_subject", "subject_id"),
    sqlite_autoincrement=True,
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("event_id", EventId, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_deliveries_event", "event_id"),
)


# -- retrieval ----------------------------------------------------------------------------------
# One search index for every corpus (memories now, document chunks next): see storage/queries/search.py.

search_collections = Table(
    "search_collections",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("key", String(80), nullable=False, unique=True, comment="What it indexes, e.g. memories:agt_…"),
    Column("entries", Integer, nullable=False),
    Column("total_length", BigInteger, nullable=False, comment="Terms in all its entries: BM25's average length."),
    Column("entry_epoch", Integer, nullable=False, comment="Bumped when an entry goes."),
    Column("entry_seq", BigInteger, nullable=False, comment="The number of the last entry stored."),
    Column("vector_epoch", Integer, nullable=False, comment="Bumped when an entry with a vector goes."),
    Column("vector_seq", BigInteger, nullable=False, comment="The number of the last vector stored."),
)

search_entries = Table(
    "search_entries",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("collection_id", EventId, ForeignKey("search_collections.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", String(48), nullable=False, unique=True, comment="The memory or chunk indexed."),
    Column("seq", BigInteger, nullable=False, comment="Its number in its collection, in commit order."),
    Column("length", Integer, nullable=False, comment="Its terms, counted with repeats."),
    Column("terms", JSON, nullable=False, comment="How often each of its distinct terms occurs."),
    Column("vector", LargeBinary, comment="Unit-length float16 embedding, once computed."),
    Column("vector_model", String(64)),
    Column("vector_seq", BigInteger),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_search_entries_seq", "collection_id", "seq"),
    Index("ix_search_entries_vectors", "collection_id", "vector_seq"),
)

# -- memory -------------------------------------------------------------------------------------

memories = Table(
    "memories",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("scope_id", String(32), nullable=False, comment="The agent (private) or conversation (shared) it is in."),
    Column("author_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("content", Text, nullable=False),
    Column("content_key", String(64), nullable=False, comment="SHA-256 of the normalized content: one per scope."),
    Column("content_bytes", Integer, nullable=False),
    Column("category", String(32)),
    Column("tags", JSON, nullable=False),
    Column("importance", Integer, nullable=False),
    Column("pinned", Boolean, nullable=False),
    Column("provenance", JSON),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("archived_at", UTCDateTime),
    UniqueConstraint("scope_id", "content_key", name="uq_memories_content"),
    Index("ix_memories_scope_updated", "scope_id", "archived_at", "updated_at", "id"),
    Index("ix_memories_scope_importance", "scope_id", "archived_at", "importance", "updated_at", "id"),
    Index("ix_memories_author", "author_id"),
)

memory_tags = Table(
    "memory_tags",
    metadata,
    Column("memory_id", String(32), ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(32), primary_key=True),
    Index("ix_memory_tags_tag", "tag", "memory_id"),
)

memory_versions = Table(
    "memory_versions",
    metadata,
    Column("memory_id", String(32), ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("change", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("category", String(32)),
    Column("tags", JSON, nullable=False),
    Column("importance", Integer, nullable=False),
    Column("pinned", Boolean, nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("changed_by", String(32), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)


agent_storage = Table(
    "agent_storage",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True, comment="memories, files, documents"),
    Column("item_count", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("agent_id", String(32), primary_key=True, comment="'' for calls without an agent (their errors); no "
                                                             "foreign key: the counts outlive nothing they count."),
    Column("day", String(10), primary_key=True, comment="The UTC day, YYYY-MM-DD."),
    Column("counter", String(48), primary_key=True, comment="requests.<rate class>, messages_sent, tool_calls, "
                                                            "executions_started, errors.<code>"),
    Column("value", BigInteger, nullable=False, comment="Added to by each node's flush, never overwritten."),
    # The operator's views read days across agents: a range of this index, never the whole table.
    Index("ix_usage_daily_day", "day", "counter"),
)

agent_limits = Table(
    "agent_limits",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("limits", JSON, nullable=False, comment="The operator's overrides of the default limits, by name."),
    Column("updated_at", UTCDateTime, nullable=False),
)


# -- background jobs ----------------------------------------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(64), nullable=False, comment="What the job is about: one job per kind and subject."),
    Column("payload", JSON, nullable=False),
    Column("state", String(8), nullable=False, comment="pending, or failed once its attempts are spent."),
    Column("run_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("lease_token", String(32), comment="Whoever holds it may write its result (compared in the UPDATE)."),
    Column("lease_until", UTCDateTime),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "subject", name="uq_jobs_subject"),
    Index("ix_jobs_due", "state", "kind", "run_at"),
)


# -- files and documents ------------------------------------------------------------------------
# Bytes are stored once per SHA-256 (`blobs`, in chunks), whoever uploads them and however often;
# files and documents refer to them, and a blob goes when the last of those does.

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("sha256", String(64), ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

files = Table(
    "files",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("sha256", String(64), ForeignKey("blobs.sha256"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Index("ix_files_owner", "owner_id", "id"),
    Index("ix_files_sha256", "sha256"),
)

message_attachments = Table(
    "message_attachments",
    metadata,
    Column("message_id", String(32), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("file_id", String(32), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_message_attachments_file", "file_id"),
)

documents = Table(
    "documents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("scope_id", String(32), nullable=False, comment="The agent or conversation whose store holds it."),
    Column("added_by", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(256), nullable=False),
    Column("file_id", String(32), ForeignKey("files.id", ondelete="SET NULL")),
    Column("sha256", String(64), ForeignKey("blobs.sha256"), nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("counts_bytes", Boolean, nullable=False,
           comment="Its bytes count against its adder's storage (given as text; a file's count as the file)."),
    Column("state", String(16), nullable=False),
    Column("error", Text),
    Column("excluded", Boolean, nullable=False),
    Column("pages", Integer),
    Column("passages", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_documents_scope", "scope_id", "id"),
    Index("ix_documents_sha256", "sha256"),
)

document_chunks = Table(
    "document_chunks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("document_id", String(32), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("page", Integer),
    Column("start", Integer, nullable=False),
    Column("end", Integer, nullable=False),
    Column("text", Text, nullable=False),
    UniqueConstraint("document_id", "idx", name="uq_document_chunks_index"),
)

document_stores = Table(
    "document_stores",
    metadata,
    Column("scope_id", String(32), primary_key=True),
    Column("round_total", Integer, nullable=False, comment="Documents in the latest round of ingestion."),
    Column("round_done", Integer, nullable=False),
    Column("round_failed", Integer, nullable=False),
    Column("round_started_at", UTCDateTime, comment="Since when: the ETA's rate is the round's so far."),
    Column("current_document_id", String(32)),
)

document_audit = Table(
    "document_audit",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("scope_id", String(32), nullable=False),
    Column("document_id", String(32), nullable=False),
    Column("action", String(24), nullable=False),
    Column("actor_id", String(32)),
    Column("at", UTCDateTime, nullable=False),
    Column("details", JSON, nullable=False),
    Index("ix_document_audit_scope", "scope_id", "id"),
    Index("ix_document_audit_document", "document_id", "id"),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("description", Text, nullable=False),
    Column("version", Integer, nullable=False, comment="The current version."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, comment="Deleted: hidden and not runnable; its runs stay as history."),
    Index("ix_workflows_owner", "owner_id", "id"),
)

workflow_versions = Table(
    "workflow_versions",
    metadata,
    Column("workflow_id", String(32), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("definition", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("restored_from", Integer),
)

executions = Table(
    "executions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(32), ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("owner_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("input", JSON, nullable=False),
    Column("output", JSON),
    Column("error", JSON),
    Column("idempotency_key", String(128)),
    Column("parent_execution_id", String(32), ForeignKey("executions.id", ondelete="CASCADE")),
    Column("parent_node_id", String(40)),
    Column("item_index", Integer),
    Column("wake_seq", Integer, nullable=False, comment="Bumped by whatever a waiting step waits for (a reply, a "
                                                        "response): a run about to sleep looks again."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("deadline_at", UTCDateTime, nullable=False),
    UniqueConstraint("workflow_id", "idempotency_key", name="uq_executions_idempotency"),
    Index("ix_executions_owner", "owner_id", "id"),
    Index("ix_executions_workflow", "workflow_id", "id"),
    Index("ix_executions_parent", "parent_execution_id", "item_index"),
)

execution_nodes = Table(
    "execution_nodes",
    metadata,
    Column("execution_id", String(32), ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", String(40), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("output", JSON),
    Column("error", JSON),
    Column("branch", String(40), comment="A condition's chosen branch."),
    Column("waiting_for", JSON, comment="What a waiting step waits for (and until when)."),
    Column("wait_conversation_id", String(32), comment="An `ask`'s conversation: a message there wakes the run."),
    Column("wait_agent_id", String(32), comment="Who is asked (`ask`) or must approve (`approval`)."),
    Column("response", JSON, comment="An answer given through workflows.respond."),
    Column("retry_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("duration_ms", Float),
    Index("ix_execution_nodes_waiting_conversation", "wait_conversation_id"),
    Index("ix_execution_nodes_waiting_agent", "wait_agent_id"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(32), ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    Column("owner_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("cron", String(128), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("input", JSON),
    Column("next_fire_at", UTCDateTime, comment="The next fire time; NULL while disabled (or when it never fires "
                                                "again). Compared and set when it fires: one node wins it."),
    Column("last_fire_time", UTCDateTime),
    Column("last_execution_id", String(32)),
    Column("last_error", JSON, comment="Why the last fire started no run (the workflow refused its input, …)."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_schedules_owner", "owner_id", "id"),
    Index("ix_schedules_workflow", "workflow_id", "id"),
    Index("ix_schedules_next_fire", "next_fire_at"),
)

schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column("schedule_id", String(32), ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
    Column("fire_time", UTCDateTime, primary_key=True, comment="Written in the transaction that starts its run: "
                                                               "a node that finds it written does nothing."),
    Column("execution_id", String(32)),
    Column("fired_at", UTCDateTime, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", String(256), nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("secret", Text, nullable=False, comment="The signing secret, encrypted with a key derived from the "
                                                   "server pepper (never stored in the clear)."),
    Column("previous_secret", Text, comment="The secret before the last rotation, encrypted; signs too until "
                                            "previous_secret_until."),
    Column("previous_secret_until", UTCDateTime),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text),
    Column("disabled_at", UTCDateTime),
    Column("failing_since", UTCDateTime, comment="The first failed attempt since the last success."),
    Column("event_cursor", EventId, nullable=False, comment="The owner's events up to this cursor are fanned out."),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_webhook_endpoints_owner", "owner_id", "id"),
)

# Runs triggered with a webhook_url: their result goes to that endpoint whatever it subscribes to.
webhook_runs = Table(
    "webhook_runs",
    metadata,
    Column("execution_id", String(32), ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True),
    Column("endpoint_id", String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("endpoint_id", String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("event_cursor", EventId, nullable=False, comment="The event it sends, read when it is sent: what was "
                                                            "erased from the event is not sent (nor kept here)."),
    Column("event_type", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    UniqueConstraint("endpoint_id", "event_cursor", name="uq_webhook_deliveries_event"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("delivery_id", String(32), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Float, nullable=False),
    Column("response", Text, nullable=False),
    Column("manual", Boolean, nullable=False),
    Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)
