"""Files (bytes stored once per SHA-256), message attachments, and the document store.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import EventId, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE messages ADD COLUMN attachments JSON")
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "blob_chunks",
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
    )
    op.create_index("ix_files_owner", "files", ["owner_id", "id"])
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_table(
        "message_attachments",
        sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("file_id", sa.String(32), sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_message_attachments_file", "message_attachments", ["file_id"])
    op.create_table(
        "documents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(32), nullable=False),
        sa.Column("added_by", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("file_id", sa.String(32), sa.ForeignKey("files.id", ondelete="SET NULL")),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("counts_bytes", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("excluded", sa.Boolean, nullable=False),
        sa.Column("pages", sa.Integer),
        sa.Column("passages", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_documents_scope", "documents", ["scope_id", "id"])
    op.create_index("ix_documents_sha256", "documents", ["sha256"])
    op.create_table(
        "document_chunks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("document_id", sa.String(32), sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("start", sa.Integer, nullable=False),
        sa.Column("end", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.UniqueConstraint("document_id", "idx", name="uq_document_chunks_index"),
    )
    op.create_table(
        "document_stores",
        sa.Column("scope_id", sa.String(32), primary_key=True),
        sa.Column("round_total", sa.Integer, nullable=False),
        sa.Column("round_done", sa.Integer, nullable=False),
        sa.Column("round_failed", sa.Integer, nullable=False),
        sa.Column("round_started_at", UTCDateTime),
        sa.Column("current_document_id", sa.String(32)),
    )
    op.create_table(
        "document_audit",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.String(32), nullable=False),
        sa.Column("document_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("actor_id", sa.String(32)),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_document_audit_scope", "document_audit", ["scope_id", "id"])
    op.create_index("ix_document_audit_document", "document_audit", ["document_id", "id"])


def downgrade() -> None:
    for table in ("document_audit", "document_stores", "document_chunks", "documents", "message_attachments",
                  "files", "blob_chunks", "blobs"):
        op.drop_table(table)
    op.execute("ALTER TABLE messages DROP COLUMN attachments")
