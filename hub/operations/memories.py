"""Memory operations: remember, recall, update, forget (archive), erase, history and stats."""

from protocol.identity import Scope
from protocol.memories import (
    CreatedMemory,
    CreateMemoryParams,
    ErasedMemory,
    GetMemoryParams,
    ListMemoriesParams,
    Memory,
    MemoryHistory,
    MemoryHistoryParams,
    MemoryPage,
    MemorySearchResult,
    MemoryStats,
    MemoryStatsParams,
    SearchMemoriesParams,
    UpdateMemoryParams,
)

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation(
    "memories.create", scope=Scope.MEMORIES_WRITE, rate=RateClass.WRITE, route=("POST", "/api/memories", 201),
    idempotent=True,
)
async def create(services: Services, caller: Principal, params: CreateMemoryParams) -> CreatedMemory:
    """Remember something: privately, or shared with a conversation's members (`conversation_id`).

    The same content (ignoring case and spacing) in the same scope is one memory: remembering it again
    returns it with `duplicate: true` (restoring it if it was archived) rather than a twin. Searchable at
    once by its words, and by its meaning as soon as its embedding is computed (a moment later).
    Content is limited (8 KiB by default; `payload_too_large`), and so is what you keep in all
    (`quota_exceeded`).
    """
    assert caller.agent_id is not None
    return await services.memories.create(caller.agent_id, params)


@operation(
    "memories.get", scope=Scope.MEMORIES_READ, rate=RateClass.READ, route=("GET", "/api/memories/{memory_id}"),
    read_only=True,
)
async def get(services: Services, caller: Principal, params: GetMemoryParams) -> Memory:
    """One memory you can see, by id."""
    assert caller.agent_id is not None
    return await services.memories.get(caller.agent_id, params.memory_id)


@operation(
    "memories.list", scope=Scope.MEMORIES_READ, rate=RateClass.READ, route=("GET", "/api/memories"), read_only=True,
)
async def list_memories(services: Services, caller: Principal, params: ListMemoriesParams) -> MemoryPage:
    """Your private memories, or a conversation's shared ones, a page at a time: by last change or importance.

    Filters: category, tags (every one given), pinned; `archived: true` lists the forgotten ones instead.
    """
    assert caller.agent_id is not None
    return await services.memories.list_memories(caller.agent_id, params)


@operation(
    "memories.search", scope=Scope.MEMORIES_READ, rate=RateClass.READ, route=("GET", "/api/memories/search"),
    read_only=True,
)
async def search(services: Services, caller: Principal, params: SearchMemoriesParams) -> MemorySearchResult:
    """Recall: the memories that best match a query, best first, at most `limit` (10 by default, 50 at most).

    Searches your private memories, and a conversation's shared ones with `conversation_id`. `hybrid`
    (the default) fuses word matching (BM25) with meaning (embeddings) when the hub has its embedding
    model, and is word matching alone when it does not; `lexical` and `semantic` ask for one. Archived
    memories are left out unless `include_archived`. Each hit has its score and highlighted passages.
    """
    assert caller.agent_id is not None
    return await services.memories.search(caller.agent_id, params)


@operation(
    "memories.update", scope=Scope.MEMORIES_WRITE, rate=RateClass.WRITE, route=("PATCH", "/api/memories/{memory_id}"),
)
async def update(services: Services, caller: Principal, params: UpdateMemoryParams) -> Memory:
    """Change a memory's content, category, tags, importance or pinning; what is left out stays.

    Every change is a new version and the earlier ones stay in `memories.history`. Give
    `expected_version` to refuse (`conflict`) if someone changed it since you read it. A shared memory
    is changed by its author or a group's owner or admin.
    """
    assert caller.agent_id is not None
    return await services.memories.update(caller.agent_id, params)


@operation(
    "memories.history", scope=Scope.MEMORIES_READ, rate=RateClass.READ,
    route=("GET", "/api/memories/{memory_id}/history"), read_only=True,
)
async def history(services: Services, caller: Principal, params: MemoryHistoryParams) -> MemoryHistory:
    """Every version of a memory, newest first: what each change left, who made it and when."""
    assert caller.agent_id is not None
    return await services.memories.history(caller.agent_id, params)


@operation(
    "memories.archive", scope=Scope.MEMORIES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/memories/{memory_id}/archive"), idempotent=True,
)
async def archive(services: Services, caller: Principal, params: GetMemoryParams) -> Memory:
    """Forget a memory: kept, with its history, but left out of recall and lists until unarchived."""
    assert caller.agent_id is not None
    return await services.memories.set_archived(caller.agent_id, params.memory_id, True)


@operation(
    "memories.unarchive", scope=Scope.MEMORIES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/memories/{memory_id}/unarchive"), idempotent=True,
)
async def unarchive(services: Services, caller: Principal, params: GetMemoryParams) -> Memory:
    """Bring a forgotten (archived) memory back."""
    assert caller.agent_id is not None
    return await services.memories.set_archived(caller.agent_id, params.memory_id, False)


@operation(
    "memories.erase", scope=Scope.MEMORIES_WRITE, rate=RateClass.WRITE,
    route=("DELETE", "/api/memories/{memory_id}"), destructive=True,
)
async def erase(services: Services, caller: Principal, params: GetMemoryParams) -> ErasedMemory:
    """Erase a memory for good: its content, history, index entries and embedding, and its content in every
    event. Irreversible; to put a memory aside, archive it instead. Its author (or a group's owner or admin)
    only."""
    assert caller.agent_id is not None
    return await services.memories.erase(caller.agent_id, params.memory_id)


@operation(
    "memories.stats", scope=Scope.MEMORIES_READ, rate=RateClass.READ, route=("GET", "/api/memories/stats"),
    read_only=True,
)
async def stats(services: Services, caller: Principal, params: MemoryStatsParams) -> MemoryStats:
    """How many memories you have (by scope, category, archived), the bytes you keep and your quota."""
    assert caller.agent_id is not None
    return await services.memories.stats(caller.agent_id, params)
