"""Rows to wire models: how stored messages, members, conversations and blocks are shown."""

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, RowMapping

from protocol.blocks import Block, BlockKind
from protocol.conversations import Conversation, ConversationDetail, ConversationInfo, ConversationKind
from protocol.members import Member, Role
from protocol.messages import PREVIEW_CHARS, Message, MessageKind, MessagePreview
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.queries import messages as message_queries


def _message_fields(row: RowMapping) -> dict[str, Any]:
    """A message row as the fields of `Message`, to validate."""
    return {
        "message_id": row["id"],
        "conversation_id": row["conversation_id"],
        "seq": row["seq"],
        "kind": row["kind"],
        "sender_id": row["sender_id"],
        "content_type": row["content_type"],
        "body": row["body"],
        "metadata": row["metadata"] or {},
        "system": row["system"],
        "reply_to": row["reply_to"],
        "client_msg_id": row["client_msg_id"],
        "created_at": row["created_at"],
        "edited_at": row["edited_at"],
        "revision": row["revision"],
        "deleted_at": row["deleted_at"],
        "attachments": row["attachments"] or [],
    }


_message_list = TypeAdapter(list[Message])


def message_of(row: RowMapping) -> Message:
    return Message.model_validate(_message_fields(row))


def messages_of(rows: Iterable[RowMapping]) -> list[Message]:
    """`message_of` of every row, validated in one call: for a page of 50, a third of the time one by one takes."""
    return _message_list.validate_python([_message_fields(row) for row in rows])


def preview_of(message: Message) -> MessagePreview:
    return MessagePreview(
        message_id=message.message_id,
        seq=message.seq,
        kind=message.kind,
        sender_id=message.sender_id,
        content_type=message.content_type,
        snippet=message.body[:PREVIEW_CHARS] if message.body is not None else None,
        system=message.system,
        created_at=message.created_at,
        deleted=message.deleted_at is not None,
    )


def info_of(row: RowMapping) -> ConversationInfo:
    return ConversationInfo(**_info_fields(row))


def _info_fields(row: RowMapping) -> dict[str, Any]:
    """The `ConversationInfo` fields of a conversation row (a `Conversation` takes them directly)."""
    return {"conversation_id": row["id"], "kind": ConversationKind(row["kind"]), "title": row["title"],
            "topic": row["topic"], "created_by": row["created_by"], "created_at": row["created_at"]}


def member_of(row: RowMapping) -> Member:
    return Member(
        agent_id=row["agent_id"], handle=row["handle"], role=Role(row["role"]), joined_at=row["joined_at"],
        last_read_seq=row["last_read_seq"],
    )


def block_of(row: RowMapping) -> Block:
    return Block(
        block_id=row["id"],
        kind=BlockKind.AGENT if row["blocked_agent_id"] is not None else BlockKind.CONVERSATION,
        agent_id=row["blocked_agent_id"],
        conversation_id=row["blocked_conversation_id"],
        created_at=row["created_at"],
    )


def unread_after(member: RowMapping) -> int:
    """The seq after which a member's messages count as unread: its marker, never before it joined."""
    return max(int(member["last_read_seq"]), int(member["joined_seq"]) - 1)


def conversation_view(conn: Connection, conversation: RowMapping, member: RowMapping, agent_id: str) -> Conversation:
    """The conversation as member `agent_id` sees it: its unread count, last message and block state."""
    return conversation_views(conn, [(conversation, member)], agent_id)[0]


def conversation_views(
    conn: Connection, pairs: Sequence[tuple[RowMapping, RowMapping]], agent_id: str,
    member_counts: dict[str, int] | None = None,
) -> list[Conversation]:
    """`conversation_view` of several (conversation, membership) pairs, in a fixed number of queries.

    A page of `conversations.list` is up to 200 conversations; one by one that was ~5 queries each,
    and their Python cost (~0.4 ms a query) made a 50-item page take 30 ms. `member_counts`, when the
    caller has them, save counting.
    """
    ids = [conversation["id"] for conversation, _ in pairs]
    blocked_senders, blocked = block_queries.blocks_for_view(conn, agent_id, ids)
    unread = message_queries.count_unread_of_member(
        conn,
        [conversation["id"] for conversation, member in pairs
         if conversation["id"] not in blocked and unread_after(member) < conversation["last_seq"]],
        reader_id=agent_id,
    )
    last = _last_messages(conn, pairs, agent_id, blocked_senders)
    if member_counts is None:
        member_counts = conversation_queries.count_active_members_of(conn, ids)
    peers = conversation_queries.peers_of(
        conn, [conversation["id"] for conversation, _ in pairs if conversation["kind"] == ConversationKind.DIRECT],
        agent_id,
    )
    views = []
    for conversation, member in pairs:
        conversation_id = conversation["id"]
        views.append(Conversation(
            **_info_fields(conversation),
            updated_at=conversation["updated_at"],
            last_seq=conversation["last_seq"],
            last_activity_at=conversation["last_activity_at"],
            member_count=member_counts[conversation_id],
            your_role=Role(member["role"]),
            last_read_seq=member["last_read_seq"],
            unread_count=unread.get(conversation_id, 0),
            blocked=conversation_id in blocked,
            peer_id=peers.get(conversation_id),
            last_message=preview_of(message_of(last[conversation_id])) if conversation_id in last else None,
        ))
    return views


def _last_messages(
    conn: Connection, pairs: Sequence[tuple[RowMapping, RowMapping]], agent_id: str, blocked_senders: set[str]
) -> dict[str, RowMapping]:
    """Each conversation's newest message the member sees, by conversation id.

    Nearly always the message at `last_seq`, fetched for all in one query. When the reader may not see
    that one (it blocks the sender), `list_messages` looks further back for that conversation alone.
    """
    newest = message_queries.newest_messages(conn, [conversation["id"] for conversation, _ in pairs])
    found: dict[str, RowMapping] = {}
    for conversation, member in pairs:
        conversation_id = conversation["id"]
        row = newest.get(conversation_id)
        if row is not None and row["seq"] >= member["joined_seq"] and not _hidden(row, blocked_senders):
            found[conversation_id] = row
            continue
        rows = message_queries.list_messages(
            conn, conversation_id, from_seq=member["joined_seq"], after=None, before=None, limit=1,
            hide_blocked_for=agent_id,
        )
        if rows:
            found[conversation_id] = rows[0]
    return found


def _hidden(row: RowMapping, blocked_senders: set[str]) -> bool:
    """Whether `list_messages(hide_blocked_for=…)` could leave `row` out (an agent's message while the reader
    blocks someone: its sender is blocked, or unknown, which SQL's NOT IN does not let through)."""
    if row["kind"] != MessageKind.MESSAGE or not blocked_senders:
        return False
    return row["sender_id"] is None or row["sender_id"] in blocked_senders


def conversation_detail(
    conn: Connection, conversation: RowMapping, member: RowMapping, agent_id: str
) -> ConversationDetail:
    members = [member_of(row) for row in conversation_queries.active_members(conn, conversation["id"])]
    view = conversation_views(conn, [(conversation, member)], agent_id, {conversation["id"]: len(members)})[0]
    # Both parts are validated models already; validating them again cost a tenth of `conversations.get`.
    return ConversationDetail.model_construct(**dict(view), members=members)
