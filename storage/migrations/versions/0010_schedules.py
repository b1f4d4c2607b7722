"""Schedules (cron + time zone) and their fire records, one per fire time.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from storage.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow_id", sa.String(32), sa.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("next_fire_at", UTCDateTime),
        sa.Column("last_fire_time", UTCDateTime),
        sa.Column("last_execution_id", sa.String(32)),
        sa.Column("last_error", sa.JSON),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_schedules_owner", "schedules", ["owner_id", "id"])
    op.create_index("ix_schedules_workflow", "schedules", ["workflow_id", "id"])
    op.create_index("ix_schedules_next_fire", "schedules", ["next_fire_at"])
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_id", sa.String(32), sa.ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("fire_time", UTCDateTime, primary_key=True),
        sa.Column("execution_id", sa.String(32)),
        sa.Column("fired_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("schedules")
