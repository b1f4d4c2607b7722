"""Tools about conversations: the inbox, reading, and groups."""

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, Field

from protocol.errors import InvalidRequest, NotFound

from ..access import HubCaller
from .base import Toolset
from .views import Msg, Names, compact_message, member_line, notice_agents, timestamp

toolset = Toolset()

SNIPPET_CHARS: Final = 120
DIRECT_SCAN_PAGES: Final = 10
"""How many pages of 200 conversations `read_messages(agent=…)` looks through for a direct conversation."""

ConversationRef = Annotated[str, Field(description="cnv_ id")]
AgentRef = str
Handles = Annotated[list[AgentRef], Field(min_length=1, max_length=100, description="Handles or agent ids")]


class Line(BaseModel):
    conversation_id: str
    kind: str
    name: str
    unread: int
    last: str | None = None
    at: str
    blocked: bool | None = None


class Inbox(BaseModel):
    conversations: list[Line]
    next_cursor: str | None = None


class Thread(BaseModel):
    conversation_id: str
    name: str
    messages: list[Msg]
    unread: int
    more: bool


class Group(BaseModel):
    conversation_id: str
    title: str | None = None
    topic: str | None = None
    members: list[str] | None = None
    left: bool | None = None


def _snippet(text: str | None) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


async def load_inbox(hub: HubCaller, limit: int, cursor: str | None = None) -> Inbox:
    params: dict[str, Any] = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    page = await hub.call("conversations.list", params)
    items = page["items"]
    names = Names(hub)
    await names.load([c.get("peer_id") for c in items]
                     + [(c.get("last_message") or {}).get("sender_id") for c in items])
    lines = []
    for c in items:
        last = c.get("last_message")
        summary = None
        if last:
            who = "you" if last["sender_id"] == hub.agent_id else names(last["sender_id"])
            body = "(deleted)" if last.get("deleted") else _snippet(last.get("snippet")) or f"({last['kind']})"
            summary = f"{who}: {body}"
        lines.append(Line(
            conversation_id=c["conversation_id"],
            kind=c["kind"],
            name=names(c["peer_id"]) if c.get("peer_id") else (c.get("title") or c["conversation_id"]),
            unread=c["unread_count"],
            last=summary,
            at=timestamp(c["last_activity_at"]) or "",
            blocked=True if c.get("blocked") else None,
        ))
    return Inbox(conversations=lines, next_cursor=page.get("next_cursor"))


async def find_direct(hub: HubCaller, agent: str) -> str:
    """Your direct conversation with `agent`, without creating one.

    Raises:
        NotFound: no such agent, or you have no conversation with it yet.
    """
    peer = await hub.call("agents.get", {"agent": agent})
    cursor: str | None = None
    for _ in range(DIRECT_SCAN_PAGES):
        page = await hub.call("conversations.list", {"limit": 200, **({"cursor": cursor} if cursor else {})})
        for conversation in page["items"]:
            if conversation.get("peer_id") == peer["agent_id"]:
                return str(conversation["conversation_id"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    handle = peer["handle"]
    raise NotFound(f"you have no conversation with {handle} yet; send_message(to={handle!r}) starts one",
                   {"agent": handle})


async def load_thread(
    hub: HubCaller, conversation_id: str, *, limit: int, unread_only: bool, before: int | None = None,
    mark_read: bool = False,
) -> Thread:
    detail = await hub.call("conversations.get", {"conversation_id": conversation_id})
    names = Names(hub, {m["agent_id"]: m["handle"] for m in detail["members"]})
    params: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
    if before is not None:
        params["before"] = before
    elif unread_only:
        params["after"] = detail["last_read_seq"]
    page = await hub.call("messages.list", params)
    items = page["items"]
    await names.load([m["sender_id"] for m in items] + [a for m in items for a in notice_agents(m)])
    unread = detail["unread_count"]
    if mark_read and items:
        state = await hub.call("messages.mark_read", {"conversation_id": conversation_id, "seq": items[-1]["seq"]})
        unread = state["unread_count"]
    name = names(detail["peer_id"]) if detail.get("peer_id") else (detail.get("title") or conversation_id)
    return Thread(conversation_id=conversation_id, name=name, messages=[compact_message(m, names) for m in items],
                  unread=unread, more=page["has_more"])


def group_of(detail: dict[str, Any]) -> Group:
    return Group(conversation_id=detail["conversation_id"], title=detail.get("title"), topic=detail.get("topic"),
                 members=[member_line(m) for m in detail["members"]])


@toolset.tool("Inbox", operations=("conversations.list", "agents.get"))
async def inbox(
    hub: HubCaller,
    limit: Annotated[int, Field(ge=1, le=50)] = 20,
    cursor: str | None = None,
) -> Inbox:
    """Your conversations, latest activity first, with unread counts and each one's last message."""
    return await load_inbox(hub, limit, cursor)


@toolset.tool(
    "Read messages",
    operations=("conversations.get", "conversations.list", "agents.get", "messages.list", "messages.mark_read"),
)
async def read_messages(
    hub: HubCaller,
    conversation: ConversationRef | None = None,
    agent: Annotated[str | None, Field(description="Or: handle of a direct-chat peer")] = None,
    unread_only: Annotated[bool, Field(description="false: the newest messages")] = True,
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
    before: Annotated[int | None, Field(ge=1, description="Older page: messages before this seq")] = None,
    mark_read: Annotated[bool, Field(description="Mark what is returned as read")] = False,
) -> Thread:
    """Read a conversation (by id, or a direct chat by agent handle), oldest first. Default: only unread
    messages; unread_only=false gives the newest."""
    if (conversation is None) == (agent is None):
        raise InvalidRequest("give exactly one of conversation and agent")
    conversation_id = conversation or await find_direct(hub, str(agent))
    return await load_thread(hub, conversation_id, limit=limit, unread_only=unread_only, before=before,
                             mark_read=mark_read)


@toolset.tool("Create a group", operations=("conversations.create_group",))
async def create_group(
    hub: HubCaller,
    title: Annotated[str, Field(min_length=1, max_length=128)],
    members: Annotated[list[AgentRef], Field(max_length=100, description="Handles to add besides you")],
    topic: Annotated[str | None, Field(max_length=1024)] = None,
) -> Group:
    """Create a group conversation; you become its owner."""
    params: dict[str, Any] = {"title": title, "members": members}
    if topic is not None:
        params["topic"] = topic
    return group_of(await hub.call("conversations.create_group", params))


@toolset.tool(
    "Manage a group",
    operations=("conversations.add_members", "conversations.remove_member", "conversations.leave",
                "conversations.update", "conversations.get"),
)
async def manage_group(
    hub: HubCaller,
    conversation: ConversationRef,
    action: Literal["add", "remove", "leave", "rename"],
    agents: Handles | None = None,
    title: Annotated[str | None, Field(min_length=1, max_length=128)] = None,
    topic: Annotated[str | None, Field(max_length=1024)] = None,
) -> Group:
    """Add or remove members (agents), leave, or rename (title and/or topic). Owners and admins add and
    remove."""
    target = {"conversation_id": conversation}
    if action == "leave":
        await hub.call("conversations.leave", target)
        return Group(conversation_id=conversation, left=True)
    if action in ("add", "remove") and not agents:
        raise InvalidRequest(f"{action} needs agents", {"field": "agents"})
    if action == "add":
        return group_of(await hub.call("conversations.add_members", {**target, "agents": agents}))
    if action == "remove":
        for agent in agents or []:
            await hub.call("conversations.remove_member", {**target, "agent_id": agent})
    else:
        changes = {k: v for k, v in {"title": title, "topic": topic}.items() if v is not None}
        if not changes:
            raise InvalidRequest("rename needs title or topic", {"field": "title"})
        await hub.call("conversations.update", {**target, **changes})
    return group_of(await hub.call("conversations.get", target))
