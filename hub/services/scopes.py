"""Who may read what is kept in a scope: an agent's own (private) scope, or a conversation's (shared)."""

from sqlalchemy import Connection, RowMapping

from protocol.errors import HubError
from protocol.memories import MemoryScope
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries


def reader_membership(conn: Connection, agent_id: str, scope: str, scope_id: str, author_id: str,
                      not_found: HubError) -> RowMapping | None:
    """The agent's membership of the scope's conversation (None for its own private scope), if it may
    read an item kept there by `author_id`: its own scope, or a conversation it is in, unless it blocks
    the author.

    Raises:
        `not_found`: it may not (the same error as for an item that does not exist).
    """
    if scope == MemoryScope.AGENT:
        if scope_id != agent_id:
            raise not_found
        return None
    member = conversation_queries.get_member(conn, scope_id, agent_id)
    if member is None or member["left_at"] is not None:
        raise not_found
    if author_id != agent_id and block_queries.blocks_agent(conn, agent_id, author_id):
        raise not_found
    return member
