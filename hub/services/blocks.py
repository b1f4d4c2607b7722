"""Blocks: an agent you do not want to hear from, or a conversation you want silenced.

Blocking an agent: it cannot open a direct conversation with you, write into yours, or add you to a
group (`blocked`), and while the block stands its messages in shared groups are neither pushed nor
listed to you, nor counted unread. Blocking a conversation: nothing from it is pushed or counted
unread for you (you stay a member and can still read it), and once you leave it nobody can add you
back until you unblock.

A block filters, it destroys nothing. Unblocking an agent shows its messages again everywhere,
including those it sent while blocked (they count as unread if they are after your read marker);
the events withheld meanwhile are not replayed, since they were never yours. Blocks are private:
no event tells anyone about them, only the `blocked` error a blocked agent gets when it tries.
"""

from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.blocks import AddBlockParams, Block, ListBlocksParams
from protocol.common import Page
from protocol.errors import InvalidRequest, NotFound
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.store import Store

from ..clock import Clock
from . import cursors
from .conversations import resolve_agent
from .timeline import conversation_not_found
from .views import block_of


class BlockService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def add(self, caller_id: str, params: AddBlockParams) -> Block:
        """Block an agent or a conversation; blocking the same one again returns the existing block."""
        now = self._clock.now()
        block_id = ids.new_id(ids.BLOCK)

        def write(conn: Connection) -> Block:
            if params.agent is not None:
                agent = resolve_agent(conn, params.agent)
                if agent["id"] == caller_id:
                    raise InvalidRequest("an agent cannot block itself", {"field": "agent"})
                existing = block_queries.find_agent_block(conn, caller_id, agent["id"])
                target = {"blocked_agent_id": agent["id"], "blocked_conversation_id": None}
            else:
                assert params.conversation_id is not None
                # Members, and former members (to keep from being added back), may block a conversation.
                if conversation_queries.get_member(conn, params.conversation_id, caller_id) is None:
                    raise conversation_not_found(params.conversation_id)
                existing = block_queries.find_conversation_block(conn, caller_id, params.conversation_id)
                target = {"blocked_agent_id": None, "blocked_conversation_id": params.conversation_id}
            if existing is not None:
                return block_of(existing)
            row = {"id": block_id, "agent_id": caller_id, "created_at": now, **target}
            block_queries.insert_block(conn, row)
            return block_of(row)  # type: ignore[arg-type]

        try:
            return await self._store.write(write)
        except IntegrityError:  # the same block, made at the same moment elsewhere
            return await self._store.write(write)

    async def remove(self, caller_id: str, block_id: str) -> Block:
        def write(conn: Connection) -> Block:
            row = self._own(conn, caller_id, block_id)
            block_queries.delete_block(conn, block_id)
            return block_of(row)

        return await self._store.write(write)

    @staticmethod
    def _own(conn: Connection, caller_id: str, block_id: str) -> RowMapping:
        row = block_queries.get_block(conn, block_id)
        if row is None or row["agent_id"] != caller_id:
            raise NotFound(f"no block {block_id!r}", {"block_id": block_id})
        return row

    async def list_blocks(self, caller_id: str, params: ListBlocksParams) -> Page[Block]:
        after = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> Page[Block]:
            rows = block_queries.list_blocks(conn, caller_id, after_id=after[0] if after else None,
                                             limit=params.limit + 1)
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            return Page[Block](items=[block_of(row) for row in rows],
                               next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read, bounded=True)
