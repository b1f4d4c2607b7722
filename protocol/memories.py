"""Models of agent memory: what an agent (or a conversation's members) keep on the hub and recall.

A memory belongs to a scope: the agent itself (`agent`, private), or a conversation
(`conversation`, shared with its current members). Nothing is lost silently: changing a memory's
content makes a new version and the earlier ones stay in its history; forgetting archives it
(reversible, left out of recall unless asked for); only erasing removes it, for good.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from .common import DEFAULT_PAGE_SIZE, Cursor, Model, PageLimit, Version
from .messages import ConversationId, MessageId

DEFAULT_MAX_MEMORY_BYTES: Final = 8 * 1024
MAX_MEMORY_CHARS: Final = 64 * 1024
"""The most content can ever be; the hub's configured limit (8 KiB by default, in UTF-8 bytes) is lower."""
MAX_TAGS: Final = 16
DEFAULT_SEARCH_LIMIT: Final = 10
MAX_SEARCH_LIMIT: Final = 50
MAX_QUERY_CHARS: Final = 1024


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Label = Annotated[str, BeforeValidator(_lower), StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,31}$")]
"""A category or tag: 1-32 of a-z 0-9 _ . : -, case-insensitive."""
MemoryId = Annotated[str, Field(min_length=1, max_length=64, description="A memory id (`mem_…`).")]
Content = Annotated[str, Field(min_length=1, max_length=MAX_MEMORY_CHARS,
                               description="The text to keep, up to the hub's limit (8 KiB by default).")]
Importance = Annotated[int, Field(ge=1, le=5, description="1 (trivia) to 5 (essential).")]


class MemoryScope(StrEnum):
    AGENT = "agent"
    """Private to the agent that wrote it."""
    CONVERSATION = "conversation"
    """Shared with a conversation's current members."""


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    """Lexical and semantic rankings fused (lexical alone while the hub has no embedding model)."""
    LEXICAL = "lexical"
    SEMANTIC = "semantic"


class Provenance(Model):
    """Where a memory came from, as far as the hub knows it."""

    conversation_id: str | None = None
    message_id: str | None = None
    document_id: str | None = None


class Memory(Model):
    memory_id: str
    scope: MemoryScope
    conversation_id: str | None = Field(description="The conversation a shared memory belongs to; null if private.")
    author_id: str
    content: str
    category: str | None
    tags: list[str]
    importance: int
    pinned: bool
    provenance: Provenance | None
    version: int = Field(description="1 at creation; every change adds one.")
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = Field(description="Set while the memory is forgotten (archived).")


class CreateMemoryParams(Model):
    content: Content
    conversation_id: ConversationId | None = Field(
        default=None, description="Share the memory with this conversation's members instead of keeping it private.")
    category: Label | None = Field(default=None, description="A free label; suggested: fact, preference, decision, "
                                                               "task, note.")
    tags: Annotated[list[Label], Field(max_length=MAX_TAGS)] = Field(default_factory=list)
    importance: Importance = 3
    pinned: bool = Field(default=False, description="Pinned memories are offered to MCP clients as context.")
    source_message_id: MessageId | None = Field(
        default=None, description="The message this memory comes from (one you can see); kept as its provenance.")


class CreatedMemory(Model):
    memory: Memory
    duplicate: bool = Field(description="The scope already held this content: this is that memory, not a new one.")
    restored: bool = Field(default=False, description="The duplicate was archived; remembering it again restored it.")


class GetMemoryParams(Model):
    memory_id: MemoryId


class MemoryOrder(StrEnum):
    UPDATED = "updated"
    IMPORTANCE = "importance"


class ListMemoriesParams(Model):
    """Without `conversation_id`: your private memories. With it: that conversation's shared ones."""

    conversation_id: ConversationId | None = None
    category: Label | None = None
    tags: Annotated[list[Label], Field(max_length=MAX_TAGS, description="Only memories with every one of these.")] = \
        Field(default_factory=list)
    archived: bool = Field(default=False, description="List archived (forgotten) memories instead of active ones.")
    pinned: bool | None = None
    order: MemoryOrder = MemoryOrder.UPDATED
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class MemoryPage(Model):
    items: list[Memory]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class SearchMemoriesParams(Model):
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
    limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT)] = DEFAULT_SEARCH_LIMIT
    conversation_id: ConversationId | None = Field(
        default=None, description="Also search this conversation's shared memories (your private ones always).")
    category: Label | None = None
    tags: Annotated[list[Label], Field(max_length=MAX_TAGS)] = Field(default_factory=list)
    min_importance: Importance | None = None
    include_archived: bool = False
    mode: SearchMode = SearchMode.HYBRID


class MemoryHit(Model):
    memory: Memory
    score: float = Field(description="Higher is better; comparable within one answer only.")
    highlights: list[str] = Field(description="Passages of the content that match the query, matches in **bold**.")


class MemorySearchResult(Model):
    items: list[MemoryHit]
    mode: SearchMode = Field(description="The ranking used: `hybrid` falls back to `lexical` without embeddings.")


class UpdateMemoryParams(Model):
    """Fields left out stay as they are. A new `content` makes a new version; the old one stays in the history."""

    memory_id: MemoryId
    content: Content | None = None
    category: Label | None = None
    tags: Annotated[list[Label], Field(max_length=MAX_TAGS)] | None = None
    importance: Importance | None = None
    pinned: bool | None = None
    expected_version: Version | None = Field(
        default=None, description="Refuse (conflict) unless the memory is still at this version: no lost updates.")


class MemoryChange(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    ARCHIVED = "archived"
    UNARCHIVED = "unarchived"


class MemoryVersion(Model):
    """The memory as one change left it."""

    version: int
    change: MemoryChange
    content: str
    category: str | None
    tags: list[str]
    importance: int
    pinned: bool
    archived: bool
    changed_by: str
    changed_at: datetime


class MemoryHistoryParams(Model):
    memory_id: MemoryId
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class MemoryHistory(Model):
    items: list[MemoryVersion] = Field(description="Newest version first.")
    next_cursor: str | None


class ErasedMemory(Model):
    memory_id: str
    erased: Literal[True] = True


class MemoryStatsParams(Model):
    conversation_id: ConversationId | None = Field(
        default=None, description="Also count this conversation's shared memories.")


class MemoryCount(Model):
    scope: MemoryScope
    conversation_id: str | None
    category: str | None
    archived: bool
    count: int


class MemoryStats(Model):
    counts: list[MemoryCount]
    bytes_used: int = Field(description="Content bytes of the memories you wrote, in every scope "
                                        "(counts to your quota).")
    quota_bytes: int
    memories_written: int
    embedded: int = Field(description="Of the memories counted, how many are ready for semantic search.")
    semantic_search: bool = Field(description="Whether this hub can search by meaning (an embedding model is on).")
