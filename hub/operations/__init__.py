"""The operation table, filled by importing each domain's declarations."""

from . import admin, agents, blocks, conversations, events, identity, messages  # noqa: F401  (each registers its operations)
from .table import OPERATIONS, Operation

__all__ = ["OPERATIONS", "Operation"]
