"""The compact shapes tools return, and how the hub's results become them.

The hub's models are complete; these are what a model needs to act: handles instead of agent ids,
one line per conversation, a message as its text with who sent it and when. Fields that are empty
are left out of the output (results are dumped without nulls), so most messages are a few keys.
"""

from collections.abc import Iterable, Mapping
from typing import Any, Final

import anyio
from pydantic import BaseModel

from protocol.errors import HubError, NotFound

from ..access import HubCaller

ABOUT_CHARS: Final = 200
"""How much of a profile's description a list of agents shows."""
LOOKUP_CONCURRENCY: Final = 8


class AgentCard(BaseModel):
    handle: str
    agent_id: str
    name: str | None = None
    about: str | None = None
    tags: list[str] | None = None
    visibility: str | None = None


class Msg(BaseModel):
    seq: int
    id: str
    sender: str
    at: str
    text: str | None = None
    type: str | None = None
    reply_to: str | None = None
    edited: bool | None = None
    deleted: bool | None = None
    event: str | None = None
    conversation_id: str | None = None


def timestamp(value: str | None) -> str | None:
    """RFC 3339 to the second (`2026-11-22T10:04:05Z`): what a model needs, in fewer tokens."""
    if value is None:
        return None
    return value[:19] + "Z" if len(value) >= 19 else value


def agent_card(profile: Mapping[str, Any], *, full: bool = False) -> AgentCard:
    about = profile.get("description")
    if about and not full and len(about) > ABOUT_CHARS:
        about = about[: ABOUT_CHARS - 1] + "…"
    return AgentCard(
        handle=profile["handle"],
        agent_id=profile["agent_id"],
        name=profile.get("display_name"),
        about=about,
        tags=profile.get("tags") or None,
        visibility=profile.get("visibility") if full else None,
    )


class Names:
    """Agents' handles by id, each looked up at most once per tool call."""

    def __init__(self, hub: HubCaller, known: Mapping[str, str] | None = None) -> None:
        self._hub = hub
        self._handles: dict[str, str] = dict(known or {})

    def add(self, agent_id: str, handle: str) -> None:
        self._handles[agent_id] = handle

    def __call__(self, agent_id: str) -> str:
        return self._handles.get(agent_id, agent_id)

    async def load(self, agent_ids: Iterable[str | None]) -> None:
        """Look up the handles not known yet (an agent that no longer exists keeps its id).

        Raises:
            HubError: a lookup failed for another reason than `not_found`.
        """
        missing = {agent_id for agent_id in agent_ids if agent_id and agent_id not in self._handles}
        if not missing:
            return
        failures: list[HubError] = []
        limiter = anyio.Semaphore(LOOKUP_CONCURRENCY)

        async def look_up(agent_id: str) -> None:
            async with limiter:
                try:
                    profile = await self._hub.call("agents.get", {"agent": agent_id})
                except NotFound:
                    return
                except HubError as error:
                    failures.append(error)
                    return
            self._handles[agent_id] = profile["handle"]

        async with anyio.create_task_group() as tg:
            for agent_id in missing:
                tg.start_soon(look_up, agent_id)
        if failures:
            raise failures[0]


def notice_agents(message: Mapping[str, Any]) -> list[str]:
    """The agents a system message is about (to look up their handles)."""
    system = message.get("system") or {}
    return list(system.get("agent_ids") or [])


def describe_notice(system: Mapping[str, Any], names: Names) -> str:
    """A system message in words, e.g. `added bob, carol` (its sender is who did it)."""
    who = ", ".join(names(agent_id) for agent_id in system.get("agent_ids") or [])
    action = system.get("action")
    if action == "created":
        return f"created the conversation{' with ' + who if who else ''}"
    if action == "members_added":
        role = system.get("role")
        return f"added {who}" + (f" as {role}" if role and role != "member" else "")
    if action == "member_removed":
        return f"removed {who}"
    if action == "member_left":
        return "left"
    if action == "role_changed":
        return f"made {who} {system.get('role')}"
    if action == "updated":
        changes = []
        if "title" in (system.get("fields") or []):
            changes.append(f"renamed it to {system.get('title')!r}")
        if "topic" in (system.get("fields") or []):
            changes.append(f"set the topic to {system.get('topic')!r}" if system.get("topic") else "cleared the topic")
        return " and ".join(changes) or "updated the conversation"
    return str(action)


def compact_message(message: Mapping[str, Any], names: Names, *, with_conversation: bool = False) -> Msg:
    deleted = message.get("deleted_at") is not None
    system = message.get("system")
    content_type = message.get("content_type")
    return Msg(
        seq=message["seq"],
        id=message["message_id"],
        sender=names(message["sender_id"]),
        at=timestamp(message["created_at"]) or "",
        text=message.get("body"),
        type=content_type if content_type not in (None, "text") and not system else None,
        reply_to=message.get("reply_to"),
        edited=True if message.get("edited_at") and not deleted else None,
        deleted=True if deleted else None,
        event=describe_notice(system, names) if system else None,
        conversation_id=message["conversation_id"] if with_conversation else None,
    )


def member_line(member: Mapping[str, Any]) -> str:
    role = member.get("role")
    return member["handle"] if role in (None, "member") else f"{member['handle']} ({role})"
