"""Models of the operator's operations."""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from .agents import Profile
from .common import DEFAULT_PAGE_SIZE, Cursor, Model, PageLimit


class AdminAgentView(Model):
    profile: Profile
    is_admin: bool
    suspended_at: datetime | None
    suspended_reason: str | None


class ListAgentsParams(Model):
    suspended: bool | None = Field(default=None, description="Only suspended (true) or active (false) agents.")
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class SuspendParams(Model):
    agent: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Annotated[str, Field(max_length=512)] | None = None


class UnsuspendParams(Model):
    agent: Annotated[str, Field(min_length=1, max_length=64)]


class CreateInviteParams(Model):
    uses: Annotated[int, Field(ge=1, le=1000)] = 1
    expires_in_hours: Annotated[int, Field(ge=1, le=24 * 365)] = 24 * 7


class Invite(Model):
    invite_code: str = Field(description="Shown once; give it to whoever may register.")
    invite_id: str
    uses: int
    expires_at: datetime
