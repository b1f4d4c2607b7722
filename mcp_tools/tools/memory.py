"""Tools for the agent's memory: remember, recall, update, forget.

Recall answers with compact items and never more than asked for (`limit`, 10 at most here): a model
gets the few memories that matter, not the store. Forgetting archives; erasing is left out of the
tools on purpose, so a model cannot destroy a memory for good (an operator's script can, with
`memories.erase`).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ..access import HubCaller
from .base import Toolset

toolset = Toolset()

MemoryRef = Annotated[str, Field(description="mem_ id")]
Shared = Annotated[str | None, Field(description="conversation_id: share with its members")]
Labels = Annotated[list[str], Field(max_length=16)]


class Remembered(BaseModel):
    memory_id: str
    version: int
    duplicate: bool | None = None
    restored: bool | None = None


class Recalled(BaseModel):
    id: str
    content: str
    category: str | None = None
    score: float
    shared: bool | None = None


class Recall(BaseModel):
    memories: list[Recalled]


class Changed(BaseModel):
    memory_id: str
    version: int
    archived: bool | None = None


@toolset.tool("Remember", operations=("memories.create",))
async def remember(
    hub: HubCaller,
    content: Annotated[str, Field(min_length=1)],
    category: Annotated[str | None, Field(description="fact, preference, decision, task, note…")] = None,
    tags: Labels | None = None,
    importance: Annotated[int, Field(ge=1, le=5)] = 3,
    conversation: Shared = None,
) -> Remembered:
    """Keep something for later, privately or shared with a conversation. Remembering the same thing
    again returns the existing memory (duplicate), never a copy."""
    params: dict[str, Any] = {"content": content, "importance": importance}
    params.update({k: v for k, v in {"category": category, "tags": tags, "conversation_id": conversation}.items()
                   if v is not None})
    created = await hub.call("memories.create", params)
    memory = created["memory"]
    return Remembered(memory_id=memory["memory_id"], version=memory["version"],
                      duplicate=created["duplicate"] or None, restored=created.get("restored") or None)


@toolset.tool("Recall", operations=("memories.search",))
async def recall(
    hub: HubCaller,
    query: Annotated[str, Field(min_length=1)],
    limit: Annotated[int, Field(ge=1, le=10)] = 5,
    conversation: Annotated[str | None, Field(description="Also its shared memories")] = None,
) -> Recall:
    """The memories that best match a question or topic, best first."""
    params: dict[str, Any] = {"query": query, "limit": limit}
    if conversation is not None:
        params["conversation_id"] = conversation
    found = await hub.call("memories.search", params)
    return Recall(memories=[
        Recalled(id=hit["memory"]["memory_id"], content=hit["memory"]["content"],
                 category=hit["memory"].get("category"), score=round(hit["score"], 4),
                 shared=True if hit["memory"]["scope"] == "conversation" else None)
        for hit in found["items"]
    ])


@toolset.tool("Update a memory", operations=("memories.update",))
async def update_memory(
    hub: HubCaller,
    memory_id: MemoryRef,
    content: Annotated[str | None, Field(min_length=1)] = None,
    importance: Annotated[int | None, Field(ge=1, le=5)] = None,
    pinned: bool | None = None,
    tags: Labels | None = None,
    category: str | None = None,
) -> Changed:
    """Change a memory; the old version stays in its history."""
    changes = {k: v for k, v in {"content": content, "importance": importance, "pinned": pinned, "tags": tags,
                                 "category": category}.items() if v is not None}
    memory = await hub.call("memories.update", {"memory_id": memory_id, **changes})
    return Changed(memory_id=memory["memory_id"], version=memory["version"])


@toolset.tool("Forget", operations=("memories.archive", "memories.unarchive"))
async def forget(
    hub: HubCaller,
    memory_id: MemoryRef,
    undo: Annotated[bool, Field(description="Bring it back instead")] = False,
) -> Changed:
    """Put a memory aside: it stays (with its history) but is no longer recalled. Reversible with undo."""
    operation: Literal["memories.archive", "memories.unarchive"] = "memories.unarchive" if undo else "memories.archive"
    memory = await hub.call(operation, {"memory_id": memory_id})
    return Changed(memory_id=memory["memory_id"], version=memory["version"], archived=memory["archived_at"] is not None)
