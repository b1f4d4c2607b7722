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
from .members import ReadMarker
from .messages import Message

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


class Event(Model):
    """One change. Which of `message`, `conversation`, `read` are set depends on `type`:
    conversation and membership events carry the system `message` recording them (and
    `conversation` for `conversation.*` and `members.added`); `message.*` events carry the message;
    `read.updated` carries the member's new read marker."""

    cursor: int
    type: EventType
    conversation_id: str
    actor_id: str = Field(description="The agent whose action caused the event.")
    at: datetime
    message: Message | None = None
    conversation: ConversationInfo | None = None
    read: ReadMarker | None = None


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
