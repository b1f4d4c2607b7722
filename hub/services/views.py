"""Rows to wire models: how stored messages, members, conversations and blocks are shown."""

from sqlalchemy import Connection, RowMapping

from protocol.blocks import Block, BlockKind
from protocol.conversations import Conversation, ConversationDetail, ConversationInfo, ConversationKind
from protocol.members import Member, Role
from protocol.messages import PREVIEW_CHARS, ContentType, Message, MessageKind, MessagePreview, SystemNotice
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.queries import messages as message_queries


def message_of(row: RowMapping) -> Message:
    return Message(
        message_id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        kind=MessageKind(row["kind"]),
        sender_id=row["sender_id"],
        content_type=ContentType(row["content_type"]),
        body=row["body"],
        metadata=row["metadata"] or {},
        system=SystemNotice.model_validate(row["system"]) if row["system"] is not None else None,
        reply_to=row["reply_to"],
        client_msg_id=row["client_msg_id"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        revision=row["revision"],
        deleted_at=row["deleted_at"],
    )


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
    return ConversationInfo(
        conversation_id=row["id"],
        kind=ConversationKind(row["kind"]),
        title=row["title"],
        topic=row["topic"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


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
    conversation_id = conversation["id"]
    blocked = block_queries.find_conversation_block(conn, agent_id, conversation_id) is not None
    unread = 0 if blocked else message_queries.count_unread(
        conn, conversation_id, reader_id=agent_id, after_seq=unread_after(member)
    )
    last = message_queries.list_messages(
        conn, conversation_id, from_seq=member["joined_seq"], after=None, before=None, limit=1,
        hide_blocked_for=agent_id,
    )
    direct = conversation["kind"] == ConversationKind.DIRECT
    return Conversation(
        **info_of(conversation).model_dump(),
        updated_at=conversation["updated_at"],
        last_seq=conversation["last_seq"],
        last_activity_at=conversation["last_activity_at"],
        member_count=conversation_queries.count_active_members(conn, conversation_id),
        your_role=Role(member["role"]),
        last_read_seq=member["last_read_seq"],
        unread_count=unread,
        blocked=blocked,
        peer_id=conversation_queries.peer_of(conn, conversation_id, agent_id) if direct else None,
        last_message=preview_of(message_of(last[0])) if last else None,
    )


def conversation_detail(
    conn: Connection, conversation: RowMapping, member: RowMapping, agent_id: str
) -> ConversationDetail:
    view = conversation_view(conn, conversation, member, agent_id)
    members = [member_of(row) for row in conversation_queries.active_members(conn, conversation["id"])]
    return ConversationDetail(**view.model_dump(), members=members)
