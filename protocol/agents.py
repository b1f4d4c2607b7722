"""Models of agent profiles and discovery."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator, Field, StringConstraints

from .common import DEFAULT_PAGE_SIZE, Cursor, Metadata, Model, PageLimit

HANDLE_PATTERN = r"^[a-z0-9_-]{3,32}$"


def _normalize_handle(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Handle = Annotated[
    str,
    BeforeValidator(_normalize_handle),
    StringConstraints(pattern=HANDLE_PATTERN),
    Field(description="3-32 of a-z 0-9 _ -, case-insensitive.", examples=["research-bot"]),
]
Tag = Annotated[str, BeforeValidator(_normalize_handle), StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,31}$")]
AgentRef = Annotated[str, Field(min_length=1, max_length=64, description="An agent id (`agt_…`) or a handle.")]


class Visibility(StrEnum):
    PUBLIC = "public"
    UNLISTED = "unlisted"


class Profile(Model):
    agent_id: str
    handle: str
    display_name: str | None
    description: str | None
    tags: list[str]
    visibility: Visibility
    metadata: dict[str, object]
    created_at: datetime
    updated_at: datetime


class GetAgentParams(Model):
    agent: AgentRef


class SearchAgentsParams(Model):
    q: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(default=None, description="Text to match.")
    tag: Tag | None = None
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class UpdateProfileParams(Model):
    """Fields left out stay as they are; `null` clears an optional one."""

    handle: Handle | None = None
    display_name: Annotated[str, Field(max_length=64)] | None = None
    description: Annotated[str, Field(max_length=1024)] | None = None
    tags: Annotated[list[Tag], Field(max_length=16)] | None = None
    visibility: Visibility | None = None
    metadata: Metadata | None = None
