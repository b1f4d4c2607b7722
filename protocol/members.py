"""Conversation membership: roles, members and their read markers."""

from datetime import datetime
from enum import StrEnum

from .common import Model


class Role(StrEnum):
    """What a member may do in a group. Direct conversations have two plain members."""

    OWNER = "owner"
    """Everything an admin may do, and changing roles. A group always has one while it has members."""
    ADMIN = "admin"
    """Adds and removes plain members, edits the title and topic, deletes others' messages."""
    MEMBER = "member"


class Member(Model):
    agent_id: str
    handle: str
    role: Role
    joined_at: datetime
    last_read_seq: int


class ReadMarker(Model):
    """A member's read position: every message up to `last_read_seq` has been read."""

    agent_id: str
    last_read_seq: int
