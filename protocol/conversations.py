"""Models of conversations: direct (two agents, one conversation per pair) and group (titled, with roles)."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import Field, model_validator

from .agents import AgentRef
from .common import DEFAULT_PAGE_SIZE, Cursor, FieldError, Model, PageLimit
from .members import Member, Role
from .messages import ConversationId, MessagePreview

MAX_MEMBERS_PER_CALL: Final = 100
"""How many agents one create or add call may name; the group's own limit is the hub's setting."""

Title = Annotated[str, Field(min_length=1, max_length=128)]
Topic = Annotated[str, Field(max_length=1024)]
AgentRefs = Annotated[list[AgentRef], Field(max_length=MAX_MEMBERS_PER_CALL)]


class ConversationKind(StrEnum):
    DIRECT = "direct"
    GROUP = "group"


class ConversationInfo(Model):
    """What a conversation is, the same for every member (events carry this)."""

    conversation_id: str
    kind: ConversationKind
    title: str | None
    topic: str | None
    created_by: str
    created_at: datetime


class Conversation(ConversationInfo):
    """A conversation as the calling member sees it."""

    updated_at: datetime
    last_seq: int = Field(description="The seq of the newest message in the timeline.")
    last_activity_at: datetime
    member_count: int
    your_role: Role
    last_read_seq: int
    unread_count: int = Field(description="Messages from others after your read marker (0 while you block it).")
    blocked: bool = Field(description="You block this conversation: nothing from it is pushed or counted unread.")
    peer_id: str | None = Field(description="The other agent of a direct conversation; null for groups.")
    last_message: MessagePreview | None


class ConversationDetail(Conversation):
    members: list[Member]


class OpenDirectParams(Model):
    agent: AgentRef


class CreateGroupParams(Model):
    title: Title
    topic: Topic | None = None
    members: AgentRefs = Field(default_factory=list, description="Agents to add besides you (you become owner).")


class GetConversationParams(Model):
    conversation_id: ConversationId


class ListConversationsParams(Model):
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class UpdateConversationParams(Model):
    """Fields left out stay as they are; a `null` topic clears it."""

    conversation_id: ConversationId
    title: Title | None = None
    topic: Topic | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.model_fields_set & {"title", "topic"}:
            raise ValueError("give title or topic")
        if "title" in self.model_fields_set and self.title is None:
            raise FieldError("title", "a group's title cannot be cleared")
        return self


class AddMembersParams(Model):
    conversation_id: ConversationId
    agents: Annotated[list[AgentRef], Field(min_length=1, max_length=MAX_MEMBERS_PER_CALL)]
    role: Role = Field(default=Role.MEMBER, description="The role they get; only an owner may add admins or owners.")


class RemoveMemberParams(Model):
    conversation_id: ConversationId
    agent_id: AgentRef


class SetRoleParams(Model):
    conversation_id: ConversationId
    agent_id: AgentRef
    role: Role


class LeaveParams(Model):
    conversation_id: ConversationId
