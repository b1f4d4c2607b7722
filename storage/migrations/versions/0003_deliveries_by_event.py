"""An index on deliveries by event, so a node can find whom the events it missed were for.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_event", "deliveries", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_event", table_name="deliveries")
