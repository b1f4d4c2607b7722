"""Models of events: every change an agent may see, numbered by one hub-wide cursor.

An agent's events are the ones delivered to it, in cursor order. Asking for the events after a
cursor (`events.list`), or subscribing with one (`events.subscribe` on the WebSocket), returns
each later event exactly once. Cursors only grow; they are not dense (another agent's events sit
in the gaps).

An event is a snapshot taken when it happened: a `message.created` event shows the message as sent,
and a later edit is a `message.edited` event of its own. Deleting a message erases its body from
every event that carried it as well.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field

from .common import DEFAULT_PAGE_SIZE, Model, PageLimit
from .conversations import ConversationInfo
from .documents import Document, StoreStatus
from .members import ReadMarker
from .memories import Memory
from .messages import Message
from .workflows import ExecutionEvent, NodeRun

MAX_WAIT_SECONDS: Final = 30.0
SUBSCRIBE_METHOD: Final = "events.subscribe"
"""The WebSocket method that starts a live stream; events then arrive as `event` notifications."""
EVENT_NOTIFICATION: Final = "event"

EventCursor = Annotated[int, Field(ge=0, le=2**63 - 1, description="An event cursor; 0 is before the first event.")]


class EventType(StrEnum):
    CONVERSATION_CREATED = "conversation.created"
    CONVERSATION_UPDATED = "conversation.updated"
    MEMBERS_ADDED = "members.added"
    MEMBER_REMOVED = "member.removed"
    MEMBER_LEFT = "member.left"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    MESSAGE_CREATED = "message.created"
    MESSAGE_EDITED = "message.edited"
    MESSAGE_DELETED = "message.deleted"
    READ_UPDATED = "read.updated"
    MEMORY_CREATED = "memory.created"
    MEMORY_UPDATED = "memory.updated"
    MEMORY_ARCHIVED = "memory.archived"
    MEMORY_UNARCHIVED = "memory.unarchived"
    MEMORY_ERASED = "memory.erased"
    DOCUMENTS_PROGRESS = "documents.progress"
    EXECUTION_STARTED = "execution.started"
    NODE_STARTED = "node.started"
    NODE_COMPLETED = "node.completed"
    NODE_FAILED = "node.failed"
    EXECUTION_COMPLETED = "execution.completed"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_CANCELLED = "execution.cancelled"
    EXECUTION_TIMED_OUT = "execution.timed_out"
    WORKFLOW_REQUEST = "workflow.request"


class Event(Model):
    """One change. Which of `message`, `conversation`, `read`, `memory` are set depends on `type`:
    conversation and membership events carry the system `message` recording them (and
    `conversation` for `conversation.*` and `members.added`); `message.*` events carry the message;
    `read.updated` carries the member's new read marker; `memory.*` events carry `memory_id` and the
    memory as the change left it (none once it is erased: erasing reaches every earlier event too);
    `documents.progress` carries a document as it stands (none once deleted) and its store's `progress`;
    `execution.*` and `node.*` (to a workflow's owner) carry the run as it stands and, for `node.*`, the
    node's result; `workflow.request` (to the agent asked to approve) carries the run and the waiting node."""

    cursor: int
    type: EventType
    conversation_id: str | None = Field(description="The conversation it happened in; null for a private memory.")
    actor_id: str = Field(description="The agent whose action caused the event.")
    at: datetime
    message: Message | None = None
    conversation: ConversationInfo | None = None
    read: ReadMarker | None = None
    memory_id: str | None = None
    memory: Memory | None = None
    document: Document | None = None
    progress: StoreStatus | None = None
    execution: ExecutionEvent | None = None
    node: NodeRun | None = None


class ListEventsParams(Model):
    after: EventCursor = 0
    limit: PageLimit = DEFAULT_PAGE_SIZE
    timeout: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = Field(
        default=0, description="Seconds to wait for an event when there is none yet (long polling)."
    )


class EventPage(Model):
    items: list[Event]
    next_cursor: int = Field(description="Pass as `after` next time: the last item's cursor, or `after` if none.")
    has_more: bool


class SubscribeParams(Model):
    after: EventCursor | None = Field(
        default=None, description="Replay every event after this cursor, then go live; left out, start live now."
    )


class SubscribeResult(Model):
    after: int = Field(description="The cursor the stream starts after.")
