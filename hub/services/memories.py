"""Agent memory: remember, recall, update, forget, erase, with a history that loses nothing.

Who may do what:

- A private memory (scope `agent`) is its agent's alone: anyone else gets `not_found`.
- A shared memory (scope `conversation`) is read by the conversation's current members, except
  those who block its author (as for messages); it is changed (updated, archived, unarchived) by its
  author or a group's owner or admin, and erased by the same. Anyone else, a former member
  included, gets `not_found`: leaving a conversation ends access to its memories. Writing into a
  direct conversation whose other agent blocks you is `blocked`, as a message would be.

Nothing is lost silently: every change adds a version (the memory as the change left it, who made
it, when) and `memories.history` shows them all; forgetting archives (reversible); erasing is the
one irreversible change, and it is complete: the row, its history, its index terms, its vector, a
pending embedding job, and its content in every event that carried it.

The same content (normalized: case and whitespace) in the same scope is one memory: remembering it
again returns that memory marked `duplicate` (and restores it if it was archived), never a twin.
"""

import hashlib
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.conversations import ConversationKind
from protocol.errors import Blocked, Conflict, Forbidden, NotFound, PayloadTooLarge, QuotaExceeded
from protocol.events import EventType
from protocol.members import Role
from protocol.memories import (
    CreatedMemory,
    CreateMemoryParams,
    ErasedMemory,
    ListMemoriesParams,
    Memory,
    MemoryChange,
    MemoryCount,
    MemoryHistory,
    MemoryHistoryParams,
    MemoryHit,
    MemoryOrder,
    MemoryPage,
    MemoryScope,
    MemorySearchResult,
    MemoryStats,
    MemoryStatsParams,
    MemoryVersion,
    Provenance,
    SearchMemoriesParams,
    UpdateMemoryParams,
)
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.queries import memories as memory_queries
from storage.queries import usage as usage_queries
from storage.store import Store

from ..bus import EventBus
from ..clock import Clock
from ..config import Settings
from ..jobs import JobRunner
from ..retrieval.index import EMBED_JOB, SearchIndex, collection_key, index_items, unindex_item
from ..retrieval.text import analyze, highlights, normalized, query_terms
from ..usage import memory_quota
from . import cursors
from .messages import visible_message
from .scopes import reader_membership
from .timeline import Delivery, emit, erase_from_events, recipients, write_and_publish

CORPUS: Final = "memories"
CANDIDATE_ROUNDS: Final = 3
"""A search ranks twice its limit (and 10) before its filters, then eight times as many, while too few pass."""
MANAGERS: Final = frozenset({Role.OWNER, Role.ADMIN})


def _not_found(memory_id: str) -> NotFound:
    return NotFound(f"no memory {memory_id!r}", {"memory_id": memory_id})


def content_key(content: str) -> str:
    return hashlib.sha256(normalized(content).encode()).hexdigest()


def memory_of(row: RowMapping | dict[str, Any]) -> Memory:
    shared = row["scope"] == MemoryScope.CONVERSATION
    return Memory(
        memory_id=row["id"], scope=MemoryScope(row["scope"]), conversation_id=row["scope_id"] if shared else None,
        author_id=row["author_id"], content=row["content"], category=row["category"], tags=list(row["tags"]),
        importance=row["importance"], pinned=row["pinned"],
        provenance=Provenance.model_validate(row["provenance"]) if row["provenance"] else None,
        version=row["version"], created_at=row["created_at"], updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


def _version_of(row: RowMapping) -> MemoryVersion:
    return MemoryVersion(
        version=row["version"], change=MemoryChange(row["change"]), content=row["content"], category=row["category"],
        tags=list(row["tags"]), importance=row["importance"], pinned=row["pinned"], archived=row["archived"],
        changed_by=row["changed_by"], changed_at=row["changed_at"],
    )


def _record_version(conn: Connection, row: dict[str, Any], change: MemoryChange, by: str, at: datetime) -> None:
    memory_queries.insert_version(conn, {
        "memory_id": row["id"], "version": row["version"], "change": change.value, "content": row["content"],
        "category": row["category"], "tags": row["tags"], "importance": row["importance"], "pinned": row["pinned"],
        "archived": row["archived_at"] is not None, "changed_by": by, "changed_at": at,
    })


class MemoryService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, bus: EventBus, index: SearchIndex,
                 jobs: JobRunner) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._bus = bus
        self._index = index
        self._jobs = jobs

    # -- who may do what ------------------------------------------------------------------------

    @staticmethod
    def _membership(conn: Connection, conversation_id: str, agent_id: str) -> RowMapping:
        """The agent's current membership of the conversation.

        Raises:
            NotFound: not a member (now): the conversation is not the agent's to see.
        """
        member = conversation_queries.get_member(conn, conversation_id, agent_id)
        if member is None or member["left_at"] is not None:
            raise NotFound(f"no conversation {conversation_id!r}", {"conversation_id": conversation_id})
        return member

    def _readable(self, conn: Connection, agent_id: str, memory_id: str) -> tuple[RowMapping, RowMapping | None]:
        """The memory, if the agent may read it, and the agent's membership when it is shared.

        Raises:
            NotFound: no such memory, or not the agent's to see (the same error either way).
        """
        row = memory_queries.get(conn, memory_id)
        if row is None:
            raise _not_found(memory_id)
        return row, reader_membership(conn, agent_id, row["scope"], row["scope_id"], row["author_id"],
                                      _not_found(memory_id))

    def _changeable(self, conn: Connection, agent_id: str, memory_id: str) -> RowMapping:
        """The memory, if the agent may change (or erase) it.

        Raises:
            NotFound: as `_readable`.
            Forbidden: it may read it, not change it.
        """
        row, member = self._readable(conn, agent_id, memory_id)
        if member is not None and row["author_id"] != agent_id:
            conversation = conversation_queries.get_conversation(conn, row["scope_id"])
            assert conversation is not None
            if conversation["kind"] != ConversationKind.GROUP or Role(member["role"]) not in MANAGERS:
                raise Forbidden("only its author or a group's owner or admin may change a shared memory")
        return row

    @staticmethod
    def _check_not_blocked(conn: Connection, conversation_id: str, agent_id: str) -> None:
        """Writing into a direct conversation whose other agent blocks the writer is refused, as a message is.

        Raises:
            Blocked: it is, and the other agent does.
        """
        conversation = conversation_queries.get_conversation(conn, conversation_id)
        assert conversation is not None
        if conversation["kind"] == ConversationKind.DIRECT and \
                block_queries.blocked_by_other_member(conn, conversation_id, agent_id):
            raise Blocked("the other agent does not accept anything from you")

    @staticmethod
    def _audience(conn: Connection, row: RowMapping | dict[str, Any]) -> list[str]:
        """Who is told about a change to the memory: its agent, or the members who may read it."""
        if row["scope"] == MemoryScope.AGENT:
            return [row["scope_id"]]
        return recipients(conn, row["scope_id"], sender_id=row["author_id"])

    def _event(self, conn: Connection, type: EventType, row: RowMapping | dict[str, Any], actor_id: str,
               now: datetime) -> Delivery:
        conversation_id = row["scope_id"] if row["scope"] == MemoryScope.CONVERSATION else None
        return emit(conn, type, conversation_id, actor_id=actor_id, now=now, to=self._audience(conn, row),
                    memory_id=row["id"], memory=memory_of(row))

    # -- limits ---------------------------------------------------------------------------------

    def _check_size(self, content: str) -> int:
        size = len(content.encode())
        limit = self._settings.max_memory_bytes
        if size > limit:
            raise PayloadTooLarge(f"a memory's content is limited to {limit} bytes (this one is {size})",
                                  {"field": "content", "max_bytes": limit, "bytes": size})
        return size

    def _check_quota(self, conn: Connection, author_id: str, more: int) -> None:
        _, used = usage_queries.storage_used(conn, author_id, usage_queries.MEMORIES)
        quota = memory_quota(conn, self._settings, author_id)
        if more > 0 and used + more > quota:
            raise QuotaExceeded(
                f"your memories may hold {quota} bytes in all; {used} are used and this needs {more} more: "
                "erase memories you no longer need", quota="memory_bytes", limit=quota, used=used)

    # -- writing --------------------------------------------------------------------------------

    async def create(self, caller_id: str, params: CreateMemoryParams) -> CreatedMemory:
        size = self._check_size(params.content)
        key = content_key(params.content)
        terms = analyze(params.content)
        now = self._clock.now()
        memory_id = ids.new_id(ids.MEMORY)
        embed = self._index.semantic

        def write(conn: Connection) -> tuple[CreatedMemory, list[Delivery]]:
            provenance = self._provenance(conn, caller_id, params)
            if params.conversation_id is not None:
                scope, scope_id = MemoryScope.CONVERSATION, params.conversation_id
                self._membership(conn, scope_id, caller_id)
                self._check_not_blocked(conn, scope_id, caller_id)
            else:
                scope, scope_id = MemoryScope.AGENT, caller_id
            existing = memory_queries.find_by_content(conn, scope_id, key)
            if existing is not None:
                return self._remembered_again(conn, existing, caller_id, now)
            self._check_quota(conn, caller_id, size)
            row = {
                "id": memory_id, "scope": scope.value, "scope_id": scope_id, "author_id": caller_id,
                "content": params.content, "content_key": key, "content_bytes": size, "category": params.category,
                "tags": sorted(set(params.tags)), "importance": params.importance, "pinned": params.pinned,
                "provenance": provenance.model_dump(mode="json", exclude_none=True) if provenance else None,
                "version": 1, "created_at": now, "updated_at": now, "archived_at": None,
            }
            memory_queries.insert_memory(conn, row)
            _record_version(conn, row, MemoryChange.CREATED, caller_id, now)
            usage_queries.add_storage(conn, caller_id, usage_queries.MEMORIES, 1, size)
            index_items(conn, CORPUS, scope_id, [(memory_id, terms)], now, embed=embed)
            return CreatedMemory(memory=memory_of(row), duplicate=False), [
                self._event(conn, EventType.MEMORY_CREATED, row, caller_id, now)]

        try:
            created = await write_and_publish(self._store, self._bus, write)
        except IntegrityError:  # the same content, remembered at the same moment elsewhere: it exists now
            created = await write_and_publish(self._store, self._bus, write)
        if embed and not created.duplicate:
            self._jobs.notify(EMBED_JOB)
        return created

    def _remembered_again(self, conn: Connection, existing: RowMapping, caller_id: str,
                          now: datetime) -> tuple[CreatedMemory, list[Delivery]]:
        """The answer to remembering content the scope holds: that memory, restored if it was archived."""
        try:
            self._readable(conn, caller_id, existing["id"])
        except NotFound:  # written by an agent the caller blocks: say so, without showing it
            raise Conflict("this conversation already holds this content, from an agent you block") from None
        if existing["archived_at"] is None:
            return CreatedMemory(memory=memory_of(existing), duplicate=True), []
        row = {**existing, "archived_at": None, "updated_at": now, "version": existing["version"] + 1}
        memory_queries.update_memory(conn, existing["id"], {"archived_at": None, "updated_at": now,
                                                            "version": row["version"]})
        _record_version(conn, row, MemoryChange.UNARCHIVED, caller_id, now)
        return CreatedMemory(memory=memory_of(row), duplicate=True, restored=True), [
            self._event(conn, EventType.MEMORY_UNARCHIVED, row, caller_id, now)]

    @staticmethod
    def _provenance(conn: Connection, caller_id: str, params: CreateMemoryParams) -> Provenance | None:
        """Where the memory comes from, as the hub can vouch for it (a message the caller can see)."""
        if params.source_message_id is None:
            return Provenance(conversation_id=params.conversation_id) if params.conversation_id else None
        conversation, _, message = visible_message(conn, params.source_message_id, caller_id)
        return Provenance(conversation_id=conversation["id"], message_id=message["id"])

    async def update(self, caller_id: str, params: UpdateMemoryParams) -> Memory:
        size = self._check_size(params.content) if params.content is not None else None
        terms = analyze(params.content) if params.content is not None else None
        now = self._clock.now()
        embed = self._index.semantic

        def write(conn: Connection) -> tuple[Memory, list[Delivery]]:
            row = self._changeable(conn, caller_id, params.memory_id)
            if row["scope"] == MemoryScope.CONVERSATION:
                self._check_not_blocked(conn, row["scope_id"], caller_id)
            if params.expected_version is not None and params.expected_version != row["version"]:
                raise Conflict(f"the memory is at version {row['version']}, not {params.expected_version}: read it "
                               "again and decide", {"version": row["version"]})
            changes: dict[str, Any] = {}
            if params.content is not None and params.content != row["content"]:
                key = content_key(params.content)
                twin = memory_queries.find_by_content(conn, row["scope_id"], key)
                if twin is not None and twin["id"] != row["id"]:
                    raise Conflict("another memory in this scope already holds this content",
                                   {"memory_id": twin["id"]})
                assert size is not None
                self._check_quota(conn, row["author_id"], size - row["content_bytes"])
                changes |= {"content": params.content, "content_key": key, "content_bytes": size}
            for field in ("category", "importance", "pinned"):
                value = getattr(params, field)
                if value is not None and value != row[field]:
                    changes[field] = value
            if params.tags is not None and sorted(set(params.tags)) != list(row["tags"]):
                changes["tags"] = sorted(set(params.tags))
            if not changes:
                return memory_of(row), []
            updated = {**row, **changes, "version": row["version"] + 1, "updated_at": now}
            memory_queries.update_memory(conn, row["id"], {**changes, "version": updated["version"],
                                                           "updated_at": now})
            _record_version(conn, updated, MemoryChange.UPDATED, caller_id, now)
            if "content" in changes:
                usage_queries.add_storage(conn, row["author_id"], usage_queries.MEMORIES, 0,
                                          changes["content_bytes"] - row["content_bytes"])
                unindex_item(conn, row["id"])
                assert terms is not None
                index_items(conn, CORPUS, row["scope_id"], [(row["id"], terms)], now, embed=embed)
            return memory_of(updated), [self._event(conn, EventType.MEMORY_UPDATED, updated, caller_id, now)]

        memory = await write_and_publish(self._store, self._bus, write)
        if embed and params.content is not None:
            self._jobs.notify(EMBED_JOB)
        return memory

    async def set_archived(self, caller_id: str, memory_id: str, archived: bool) -> Memory:
        """Archive (forget) or unarchive a memory; doing what is already done changes nothing."""
        now = self._clock.now()

        def write(conn: Connection) -> tuple[Memory, list[Delivery]]:
            row = self._changeable(conn, caller_id, memory_id)
            if (row["archived_at"] is not None) == archived:
                return memory_of(row), []
            archived_at = now if archived else None
            updated = {**row, "archived_at": archived_at, "version": row["version"] + 1, "updated_at": now}
            memory_queries.update_memory(conn, memory_id, {"archived_at": archived_at, "version": updated["version"],
                                                           "updated_at": now})
            change, event = ((MemoryChange.ARCHIVED, EventType.MEMORY_ARCHIVED) if archived
                             else (MemoryChange.UNARCHIVED, EventType.MEMORY_UNARCHIVED))
            _record_version(conn, updated, change, caller_id, now)
            return memory_of(updated), [self._event(conn, event, updated, caller_id, now)]

        return await write_and_publish(self._store, self._bus, write)

    async def erase(self, caller_id: str, memory_id: str) -> ErasedMemory:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[ErasedMemory, list[Delivery]]:
            row = self._changeable(conn, caller_id, memory_id)
            audience = self._audience(conn, row)
            erase_from_events(conn, memory_id, "memory", None)
            unindex_item(conn, memory_id)
            memory_queries.delete_memory(conn, memory_id)
            usage_queries.add_storage(conn, row["author_id"], usage_queries.MEMORIES, -1, -row["content_bytes"])
            conversation_id = row["scope_id"] if row["scope"] == MemoryScope.CONVERSATION else None
            return ErasedMemory(memory_id=memory_id), [
                emit(conn, EventType.MEMORY_ERASED, conversation_id, actor_id=caller_id, now=now, to=audience,
                     memory_id=memory_id)]

        erased = await write_and_publish(self._store, self._bus, write)
        await self._store.finish_erasure()
        return erased

    # -- reading --------------------------------------------------------------------------------

    async def get(self, caller_id: str, memory_id: str) -> Memory:
        return await self._store.read(lambda conn: memory_of(self._readable(conn, caller_id, memory_id)[0]))

    def _scope_id(self, conn: Connection, caller_id: str, conversation_id: str | None) -> str:
        if conversation_id is None:
            return caller_id
        self._membership(conn, conversation_id, caller_id)
        return conversation_id

    async def list_memories(self, caller_id: str, params: ListMemoriesParams) -> MemoryPage:
        by_importance = params.order is MemoryOrder.IMPORTANCE
        types = (int, str, str) if by_importance else (str, str)
        position = cursors.decode(params.cursor, *types)

        def read(conn: Connection) -> MemoryPage:
            scope_id = self._scope_id(conn, caller_id, params.conversation_id)
            conditions = memory_queries.filters(
                category=params.category, tags=params.tags, archived=params.archived, pinned=params.pinned,
                hidden_for=caller_id if params.conversation_id else None)
            after = None
            if position is not None:
                after = (*position[:-2], datetime.fromisoformat(position[-2]), position[-1])
            rows = memory_queries.page(conn, scope_id, conditions, by_importance=by_importance, after=after,
                                       limit=params.limit + 1)
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            next_cursor = None
            if more:
                last = rows[-1]
                key = (last["importance"],) if by_importance else ()
                next_cursor = cursors.encode(*key, last["updated_at"].isoformat(), last["id"])
            return MemoryPage(items=[memory_of(row) for row in rows], next_cursor=next_cursor)

        return await self._store.read(read)

    async def search(self, caller_id: str, params: SearchMemoriesParams) -> MemorySearchResult:
        mode = self._index.mode_for(params.mode)
        scopes = [caller_id]
        if params.conversation_id is not None:
            await self._store.read(lambda conn: self._membership(conn, params.conversation_id, caller_id))
            scopes.append(params.conversation_id)
        collections = [collection_key(CORPUS, scope_id) for scope_id in scopes]
        conditions = memory_queries.filters(
            category=params.category, tags=params.tags, archived=None if params.include_archived else False,
            min_importance=params.min_importance, hidden_for=caller_id)
        hits: list[tuple[RowMapping, float]] = []
        candidates = 2 * params.limit + 10
        for _ in range(CANDIDATE_ROUNDS):
            ranked = await self._index.search(collections, params.query, mode, candidates)
            rows = await self._store.read(
                lambda conn: memory_queries.of_ids(conn, [hit.item_id for hit in ranked], scopes, conditions))
            hits = [(rows[hit.item_id], hit.score) for hit in ranked if hit.item_id in rows]
            if len(hits) >= params.limit or len(ranked) < candidates:
                break
            candidates *= 8
        terms = query_terms(params.query)
        return MemorySearchResult(mode=mode, items=[
            MemoryHit(memory=memory_of(row), score=round(score, 6), highlights=highlights(row["content"], terms))
            for row, score in hits[: params.limit]
        ])

    async def history(self, caller_id: str, params: MemoryHistoryParams) -> MemoryHistory:
        position = cursors.decode(params.cursor, int)

        def read(conn: Connection) -> MemoryHistory:
            self._readable(conn, caller_id, params.memory_id)
            rows = memory_queries.versions(conn, params.memory_id, before=position[0] if position else None,
                                           limit=params.limit + 1)
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            return MemoryHistory(items=[_version_of(row) for row in rows],
                                 next_cursor=cursors.encode(rows[-1]["version"]) if more else None)

        return await self._store.read(read)

    async def stats(self, caller_id: str, params: MemoryStatsParams) -> MemoryStats:
        embedder = self._index.embedder

        def read(conn: Connection) -> MemoryStats:
            scopes = [caller_id]
            if params.conversation_id is not None:
                scopes.append(self._scope_id(conn, caller_id, params.conversation_id))
            items, used = usage_queries.storage_used(conn, caller_id, usage_queries.MEMORIES)
            counts = [
                MemoryCount(scope=MemoryScope(row["scope"]), category=row["category"], archived=bool(row["archived"]),
                            conversation_id=row["scope_id"] if row["scope"] == MemoryScope.CONVERSATION else None,
                            count=row["count"])
                for row in memory_queries.counts(conn, scopes)
            ]
            embedded = memory_queries.count_embedded(conn, scopes, embedder.model_id) if embedder else 0
            return MemoryStats(counts=counts, bytes_used=used,
                               quota_bytes=memory_quota(conn, self._settings, caller_id),
                               memories_written=items, embedded=embedded, semantic_search=embedder is not None)

        return await self._store.read(read)
