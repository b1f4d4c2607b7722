"""Workflows: definitions and their versions, runs (executions) and each run's per-node results.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("deleted_at", UTCDateTime),
    )
    op.create_index("ix_workflows_owner", "workflows", ["owner_id", "id"])
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("restored_from", sa.Integer),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("parent_execution_id", sa.String(32), sa.ForeignKey("executions.id", ondelete="CASCADE")),
        sa.Column("parent_node_id", sa.String(40)),
        sa.Column("item_index", sa.Integer),
        sa.Column("wake_seq", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("deadline_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("workflow_id", "idempotency_key", name="uq_executions_idempotency"),
    )
    op.create_index("ix_executions_owner", "executions", ["owner_id", "id"])
    op.create_index("ix_executions_workflow", "executions", ["workflow_id", "id"])
    op.create_index("ix_executions_parent", "executions", ["parent_execution_id", "item_index"])
    op.create_table(
        "execution_nodes",
        sa.Column("execution_id", sa.String(32), sa.ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("node_id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("branch", sa.String(40)),
        sa.Column("waiting_for", sa.JSON),
        sa.Column("wait_conversation_id", sa.String(32)),
        sa.Column("wait_agent_id", sa.String(32)),
        sa.Column("response", sa.JSON),
        sa.Column("retry_at", UTCDateTime),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("duration_ms", sa.Float),
    )
    op.create_index("ix_execution_nodes_waiting_conversation", "execution_nodes", ["wait_conversation_id"])
    op.create_index("ix_execution_nodes_waiting_agent", "execution_nodes", ["wait_agent_id"])


def downgrade() -> None:
    for table in ("execution_nodes", "executions", "workflow_versions", "workflows"):
        op.drop_table(table)
