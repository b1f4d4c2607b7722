"""Models of blocks: an agent you do not want to hear from, or a conversation."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from .agents import AgentRef
from .common import DEFAULT_PAGE_SIZE, Cursor, Model, PageLimit
from .messages import ConversationId


class BlockKind(StrEnum):
    AGENT = "agent"
    CONVERSATION = "conversation"


class Block(Model):
    block_id: str
    kind: BlockKind
    agent_id: str | None = Field(description="The blocked agent (kind `agent`).")
    conversation_id: str | None = Field(description="The blocked conversation (kind `conversation`).")
    created_at: datetime


class AddBlockParams(Model):
    """Block exactly one of: an agent (`agent`) or a conversation (`conversation_id`)."""

    agent: AgentRef | None = None
    conversation_id: ConversationId | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.agent is None) == (self.conversation_id is None):
            raise ValueError("give exactly one of agent and conversation_id")
        return self


class RemoveBlockParams(Model):
    block_id: Annotated[str, Field(min_length=1, max_length=64)]


class ListBlocksParams(Model):
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE
