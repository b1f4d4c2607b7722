"""Tools about messages: sending, editing, deleting, and waiting for new ones."""

from typing import Annotated, Any, Final, Literal

import anyio
from pydantic import BaseModel, Field

from protocol.errors import InvalidRequest

from ..access import HubCaller
from ..events import head_cursor, next_events
from .base import Toolset
from .views import Msg, Names, compact_message, notice_agents, timestamp

toolset = Toolset()

MAX_WAIT_SECONDS: Final = 120.0

MessageRef = Annotated[str, Field(description="msg_ id")]
Text = Annotated[str, Field(min_length=1)]


class Sent(BaseModel):
    message_id: str
    conversation_id: str
    seq: int
    at: str


class Edited(BaseModel):
    message_id: str
    conversation_id: str
    seq: int
    revision: int


class Deleted(BaseModel):
    message_id: str
    conversation_id: str
    seq: int
    deleted: bool


class Arrivals(BaseModel):
    messages: list[Msg]
    cursor: int
    timed_out: bool


@toolset.tool("Send a message", operations=("messages.send",))
async def send_message(
    hub: HubCaller,
    text: Text,
    to: Annotated[str | None, Field(description="Handle: direct message")] = None,
    conversation: Annotated[str | None, Field(description="Or: conversation_id")] = None,
    format: Literal["text", "markdown", "json"] = "text",
    reply_to: MessageRef | None = None,
    client_msg_id: Annotated[
        str | None, Field(description="Your id for this send; a retry with it never sends twice")
    ] = None,
) -> Sent:
    """Send a message to an agent (to) or into a conversation."""
    if (to is None) == (conversation is None):
        raise InvalidRequest("give exactly one of to and conversation")
    params: dict[str, Any] = {"body": text, "content_type": format}
    params.update({k: v for k, v in {"to": to, "conversation_id": conversation, "reply_to": reply_to,
                                     "client_msg_id": client_msg_id}.items() if v is not None})
    message = await hub.call("messages.send", params)
    return Sent(message_id=message["message_id"], conversation_id=message["conversation_id"], seq=message["seq"],
                at=timestamp(message["created_at"]) or "")


@toolset.tool("Edit a message", operations=("messages.edit",))
async def edit_message(hub: HubCaller, message_id: MessageRef, text: Text) -> Edited:
    """Replace the text of a message you sent."""
    message = await hub.call("messages.edit", {"message_id": message_id, "body": text})
    return Edited(message_id=message["message_id"], conversation_id=message["conversation_id"], seq=message["seq"],
                  revision=message["revision"])


@toolset.tool("Delete a message", operations=("messages.delete",))
async def delete_message(hub: HubCaller, message_id: MessageRef) -> Deleted:
    """Delete a message for everyone (yours, or any in a group you admin). Irreversible."""
    message = await hub.call("messages.delete", {"message_id": message_id})
    return Deleted(message_id=message["message_id"], conversation_id=message["conversation_id"], seq=message["seq"],
                   deleted=True)


def _arrival(event: dict[str, Any], me: str, conversation: str | None) -> bool:
    """Whether `event` is something new for `me`: another agent's message, or being added to a group."""
    if conversation is not None and event["conversation_id"] != conversation:
        return False
    message = event.get("message")
    if message is None or event["actor_id"] == me:
        return False
    if event["type"] == "message.created":
        return message["kind"] == "message"
    if event["type"] == "members.added":
        return me in notice_agents(message)
    if event["type"] == "conversation.created":
        return (event.get("conversation") or {}).get("kind") == "group"
    return False


@toolset.tool("Wait for messages", operations=("events.list", "agents.get"))
async def wait_for_messages(
    hub: HubCaller,
    timeout: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, description="Seconds")] = 30,  # noqa: ASYNC109
    conversation: Annotated[str | None, Field(description="Only this conversation_id")] = None,
    after: Annotated[int | None, Field(ge=0, description="cursor of the previous call; default: now")] = None,
) -> Arrivals:
    """Wait until new messages arrive for you (or the timeout passes) and return them. Pass the returned
    cursor as `after` next time so nothing is missed in between."""
    deadline = anyio.current_time() + timeout
    cursor = after if after is not None else await head_cursor(hub)
    while True:
        remaining = max(0.0, deadline - anyio.current_time())
        events, cursor = await next_events(hub, cursor, remaining)
        arrived = [e for e in events if _arrival(e, hub.agent_id, conversation)]
        if arrived:
            names = Names(hub)
            await names.load([e["actor_id"] for e in arrived]
                             + [a for e in arrived for a in notice_agents(e["message"])])
            return Arrivals(messages=[compact_message(e["message"], names, with_conversation=True) for e in arrived],
                            cursor=cursor, timed_out=False)
        if not events and anyio.current_time() >= deadline:
            return Arrivals(messages=[], cursor=cursor, timed_out=True)
