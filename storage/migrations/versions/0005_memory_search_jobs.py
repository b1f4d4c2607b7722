"""Agent memory, the search index it ranks with, and durable background jobs.

Events now carry the id of whatever content their payload holds (a message or a memory) as
`subject_id`, so erasing either reaches every copy; their unused `conversation_id` column goes
(the payload has it, and private memory events have none). Both are done with SQLite's own
`ALTER TABLE … RENAME COLUMN` / `DROP COLUMN` (3.35+), not a batch rebuild: rebuilding `events`
with foreign keys on would cascade into `deliveries`.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import EventId, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_message", table_name="events")
    op.execute("ALTER TABLE events RENAME COLUMN message_id TO subject_id")
    op.execute("ALTER TABLE events DROP COLUMN conversation_id")
    op.create_index("ix_events_subject", "events", ["subject_id"])

    op.create_table(
        "search_collections",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(80), nullable=False, unique=True),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("total_length", sa.BigInteger, nullable=False),
        sa.Column("entry_epoch", sa.Integer, nullable=False),
        sa.Column("entry_seq", sa.BigInteger, nullable=False),
        sa.Column("vector_epoch", sa.Integer, nullable=False),
        sa.Column("vector_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "search_entries",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("collection_id", EventId, sa.ForeignKey("search_collections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("item_id", sa.String(48), nullable=False, unique=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("length", sa.Integer, nullable=False),
        sa.Column("terms", sa.JSON, nullable=False),
        sa.Column("vector", sa.LargeBinary),
        sa.Column("vector_model", sa.String(64)),
        sa.Column("vector_seq", sa.BigInteger),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_search_entries_seq", "search_entries", ["collection_id", "seq"])
    op.create_index("ix_search_entries_vectors", "search_entries", ["collection_id", "vector_seq"])
    op.create_table(
        "memories",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(32), nullable=False),
        sa.Column("author_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("content_key", sa.String(64), nullable=False),
        sa.Column("content_bytes", sa.Integer, nullable=False),
        sa.Column("category", sa.String(32)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("importance", sa.Integer, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("provenance", sa.JSON),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("archived_at", UTCDateTime),
        sa.UniqueConstraint("scope_id", "content_key", name="uq_memories_content"),
    )
    op.create_index("ix_memories_scope_updated", "memories", ["scope_id", "archived_at", "updated_at", "id"])
    op.create_index("ix_memories_scope_importance", "memories",
                    ["scope_id", "archived_at", "importance", "updated_at", "id"])
    op.create_index("ix_memories_author", "memories", ["author_id"])
    op.create_table(
        "memory_tags",
        sa.Column("memory_id", sa.String(32), sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(32), primary_key=True),
    )
    op.create_index("ix_memory_tags_tag", "memory_tags", ["tag", "memory_id"])
    op.create_table(
        "memory_versions",
        sa.Column("memory_id", sa.String(32), sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("category", sa.String(32)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("importance", sa.Integer, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("changed_by", sa.String(32), nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
    )

    op.create_table(
        "agent_storage",
        sa.Column("agent_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("run_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_token", sa.String(32)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("kind", "subject", name="uq_jobs_subject"),
    )
    op.create_index("ix_jobs_due", "jobs", ["state", "kind", "run_at"])


def downgrade() -> None:
    for table in ("jobs", "agent_storage", "memory_versions", "memory_tags", "memories",
                  "search_entries", "search_collections"):
        op.drop_table(table)
    op.drop_index("ix_events_subject", table_name="events")
    op.execute("ALTER TABLE events ADD COLUMN conversation_id VARCHAR(32)")
    op.execute("ALTER TABLE events RENAME COLUMN subject_id TO message_id")
    op.create_index("ix_events_message", "events", ["message_id"])
