"""What every change to a conversation does inside its write transaction.

A change appends to the conversation's timeline (a message or a system message, with the next
`seq`), records one event with its recipients (the fan-out on write), and returns the event so the
service can publish it once the transaction commits. The rules of who may see what live here, in
one place:

- Only current members see a conversation; to anyone else it does not exist (`not_found`).
- A member sees the timeline from the system message that announced its joining onwards.
- An event about a message goes to the current members who could see that message, except those
  who block the conversation (nothing is pushed to them) and, for an agent's message, those who
  block its sender.
"""

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, RowMapping

from protocol import ids
from protocol.conversations import ConversationInfo, ConversationKind
from protocol.documents import Document, StoreStatus
from protocol.errors import NotFound
from protocol.events import Event, EventType
from protocol.files import Attachment
from protocol.members import ReadMarker
from protocol.memories import Memory
from protocol.messages import ContentType, Message, MessageKind, SystemNotice
from protocol.workflows import ExecutionEvent, NodeRun
from storage.queries import conversations as conversation_queries
from storage.queries import events as event_queries
from storage.queries import files as file_queries
from storage.queries import messages as message_queries
from storage.store import Store

from ..bus import EventBus
from .views import message_of

T = TypeVar("T")

Delivery = tuple[Event, tuple[str, ...]]
"""A committed event and the agents it was delivered to: what the bus publishes."""


def conversation_not_found(conversation_id: str) -> NotFound:
    return NotFound(f"no conversation {conversation_id!r}", {"conversation_id": conversation_id})


def require_member(conn: Connection, conversation_id: str, agent_id: str) -> tuple[RowMapping, RowMapping]:
    """The conversation and `agent_id`'s current membership of it.

    Raises:
        NotFound: no such conversation, or the agent is not (or no longer) a member: the same error,
            so a non-member learns nothing about it.
    """
    member = conversation_queries.get_member(conn, conversation_id, agent_id)
    if member is None or member["left_at"] is not None:
        raise conversation_not_found(conversation_id)
    conversation = conversation_queries.get_conversation(conn, conversation_id)
    assert conversation is not None
    return conversation, member


def require_current_member(conn: Connection, conversation_id: str, agent_id: str) -> tuple[ConversationKind, int, bool]:
    """`require_member` in one light query, for the hot paths: the conversation's kind, the member's
    `joined_seq`, and whether another member (current or past) blocks it (what a send must know).

    Raises:
        NotFound: as `require_member`.
    """
    found = conversation_queries.current_membership(conn, conversation_id, agent_id)
    if found is None:
        raise conversation_not_found(conversation_id)
    kind, joined_seq, blocked = found
    return ConversationKind(kind), joined_seq, blocked


def can_see(member: RowMapping, message: RowMapping, blocked_sender: bool) -> bool:
    """Whether a current member sees `message`: sent since it joined, and not from an agent it blocks."""
    if message["seq"] < member["joined_seq"]:
        return False
    return not (message["kind"] == MessageKind.MESSAGE and blocked_sender)


def append(
    conn: Connection, conversation_id: str, *, sender_id: str, now: datetime, kind: MessageKind = MessageKind.MESSAGE,
    content_type: ContentType = ContentType.TEXT, body: str | None = None, metadata: dict[str, Any] | None = None,
    system: SystemNotice | None = None, reply_to: str | None = None, client_msg_id: str | None = None,
    message_id: str | None = None, attachments: list[Attachment] | None = None, request_hash: str | None = None,
) -> Message:
    """Add a message to the timeline with the conversation's next seq."""
    row: dict[str, Any] = {
        "id": message_id or ids.new_id(ids.MESSAGE),
        "conversation_id": conversation_id,
        "kind": kind.value,
        "sender_id": sender_id,
        "content_type": content_type.value,
        "body": body,
        "metadata": metadata if kind is MessageKind.MESSAGE else None,
        "system": system.model_dump(mode="json") if system is not None else None,
        "reply_to": reply_to,
        "client_msg_id": client_msg_id,
        "created_at": now,
        "edited_at": None,
        "revision": 0,
        "deleted_at": None,
        "attachments": [attachment.model_dump() for attachment in attachments] if attachments else None,
        "request_hash": request_hash,
        "version": 0,
    }
    # Writing into a conversation means having read it up to there.
    row["seq"] = message_queries.append_message(conn, row, read_by=sender_id)
    if attachments:
        file_queries.attach(conn, row["id"], [attachment.file_id for attachment in attachments])
    return message_of(row)  # type: ignore[arg-type]


def recipients(
    conn: Connection, conversation_id: str, *, seq: int | None = None, sender_id: str | None = None
) -> list[str]:
    """Who an event in the conversation is delivered to (see the module docstring)."""
    return conversation_queries.unblocked_member_ids(conn, conversation_id, seen_seq=seq, blocked_agent_id=sender_id)


def members_as_of(message: Message, sender_id: str | None) -> conversation_queries.MembersAsOf:
    """`recipients(conn, message.conversation_id, seq=message.seq, sender_id=sender_id)`, for `emit` to read."""
    return conversation_queries.MembersAsOf(message.conversation_id, message.seq, sender_id)


def emit(
    conn: Connection, type: EventType, conversation_id: str | None, *, actor_id: str, now: datetime,
    to: Collection[str] | conversation_queries.MembersAsOf, message: Message | None = None,
    conversation: ConversationInfo | None = None,
    read: ReadMarker | None = None, memory_id: str | None = None, memory: Memory | None = None,
    subject_id: str | None = None, document: Document | None = None, progress: StoreStatus | None = None,
    execution: ExecutionEvent | None = None, node: NodeRun | None = None,
) -> Delivery:
    """Record one event, delivered to `to`; a timeline message also makes it the conversation's latest activity.

    Its subject (what erasing reaches it by) is the message, the memory, or `subject_id`. `to` may name
    the members (`members_as_of`) instead of listing them: on PostgreSQL the append then reads them in
    its own statement, one round trip less.
    """
    event = Event(
        cursor=0, type=type, conversation_id=conversation_id, actor_id=actor_id, at=now, message=message,
        conversation=conversation, read=read, memory_id=memory_id, memory=memory, document=document,
        progress=progress, execution=execution, node=node,
    )
    subject = message.message_id if message is not None else memory_id or subject_id
    activity = conversation_id is not None and message is not None and type not in _NOT_ACTIVITY
    cursor, delivered_to = event_queries.append_event(
        conn, type=type.value, subject_id=subject, payload=event.model_dump_json(exclude={"cursor"}),
        created_at=now, to=to, activity_of=conversation_id if activity else None,
    )
    return event.model_copy(update={"cursor": cursor}), tuple(delivered_to)


def emit_new_message(conn: Connection, message: Message, *, now: datetime) -> tuple[Delivery, list[str]]:
    """`emit` of a new message's `message.created` to the members who see it (`members_as_of`), which also
    finds the workflow runs whose `ask` it answers, in the append's statement on PostgreSQL (one round trip
    less on every send). Returns the delivery and those runs."""
    event = Event(cursor=0, type=EventType.MESSAGE_CREATED, conversation_id=message.conversation_id,
                  actor_id=message.sender_id, at=now, message=message)
    cursor, delivered_to, waiting = event_queries.append_message_event(
        conn, type=event.type.value, subject_id=message.message_id, payload=event.model_dump_json(exclude={"cursor"}),
        created_at=now, to=members_as_of(message, message.sender_id),
    )
    return (event.model_copy(update={"cursor": cursor}), tuple(delivered_to)), waiting


_NOT_ACTIVITY = frozenset({EventType.MESSAGE_EDITED, EventType.MESSAGE_DELETED})


def event_of(row: RowMapping) -> Event:
    return Event.model_validate({**row["payload"], "cursor": row["id"]})


def erase_from_events(conn: Connection, subject_id: str, field: str, replacement: Any) -> None:
    """Replace `field` of every event that carried `subject_id` (a message, a memory) with `replacement`:
    what was erased goes from the events too."""
    for row in event_queries.events_about(conn, subject_id):
        event_queries.replace_payload(conn, row["id"], {**row["payload"], field: replacement})


def erase_attachment(conn: Connection, file_id: str) -> None:
    """A deleted file leaves the messages that carried it, and their events: its name and size go too."""

    def without_it(attachments: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [attachment for attachment in attachments or () if attachment["file_id"] != file_id]

    for message in file_queries.messages_carrying(conn, file_id):
        message_queries.update_message(conn, message["id"], {"attachments": without_it(message["attachments"]) or None})
        for row in event_queries.events_about(conn, message["id"]):
            snapshot = row["payload"].get("message")
            if snapshot and snapshot.get("attachments"):
                event_queries.replace_payload(conn, row["id"], {
                    **row["payload"], "message": {**snapshot, "attachments": without_it(snapshot["attachments"])}})


async def write_and_publish(store: Store, bus: EventBus, fn: Callable[[Connection], tuple[T, list[Delivery]]]) -> T:
    """Run `fn` as a write that appends events; once it commits, publish them, in cursor order.

    The write takes the event-append lock first (`serialize_appends`: commit order is cursor order
    across connections and nodes, and taking it before any row lock keeps lock order the same
    everywhere). The store calls the hook on its writer task right after the commit, in commit
    order, so live subscribers never see cursor 11 before 10.
    """

    def write(conn: Connection) -> tuple[T, list[Delivery]]:
        event_queries.serialize_appends(conn)
        return fn(conn)

    result, _ = await store.write(write, on_commit=lambda outcome: bus.publish(outcome[1]))
    return result

