"""The operation table, filled by importing each domain's declarations."""

from . import (  # noqa: F401  (each registers its operations)
    admin,
    agents,
    blocks,
    conversations,
    documents,
    events,
    files,
    identity,
    memories,
    messages,
    schedules,
    usage,
    webhooks,
    workflows,
)
from .table import OPERATIONS, Operation

__all__ = ["OPERATIONS", "Operation"]
