"""Conversations: direct (get-or-create per pair) and group (title, topic, members and their roles).

Group rules: the creator is the first owner. Owners and admins add members and edit the title and
topic; an admin removes plain members only, an owner anyone; only owners change roles (and may
make more owners). Anyone may leave; when the last owner leaves, the longest-standing admin (else
member) becomes owner, so a group with members always has one. Every change is a system message
in the timeline and an event to the members.
"""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.common import Empty, Page
from protocol.conversations import (
    AddMembersParams,
    Conversation,
    ConversationDetail,
    ConversationKind,
    CreateGroupParams,
    ListConversationsParams,
    RemoveMemberParams,
    SetRoleParams,
    UpdateConversationParams,
)
from protocol.errors import Blocked, Conflict, Forbidden, InvalidRequest, NotFound
from protocol.events import EventType
from protocol.members import Member, Role
from protocol.messages import MessageKind, SystemAction, SystemNotice
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.store import Store

from ..bus import EventBus
from ..clock import Clock
from ..config import Settings
from . import cursors
from .agents import find_agent
from .timeline import Delivery, append, emit, recipients, require_member, write_and_publish
from .views import conversation_detail, conversation_view, conversation_views, info_of, member_of

MANAGERS = frozenset({Role.OWNER, Role.ADMIN})


def _agent_not_found(ref: str) -> NotFound:
    return NotFound(f"no agent {ref!r}", {"agent": ref})


def resolve_agent(conn: Connection, ref: str) -> RowMapping:
    """An agent by id or handle.

    Raises:
        NotFound: there is none.
    """
    row = find_agent(conn, ref)
    if row is None:
        raise _agent_not_found(ref)
    return row


def open_direct_txn(
    conn: Connection, caller_id: str, peer: RowMapping, now: datetime
) -> tuple[RowMapping, list[Delivery]]:
    """The direct conversation of `caller_id` and `peer`, created if it does not exist yet.

    Raises:
        InvalidRequest: `peer` is the caller.
        Blocked: `peer` blocks the caller.
    """
    peer_id = peer["id"]
    if peer_id == caller_id:
        raise InvalidRequest("a direct conversation needs another agent", {"field": "agent"})
    if block_queries.blocks_agent(conn, peer_id, caller_id):
        raise Blocked(f"{peer['handle']} does not accept messages from you")
    direct_key = ":".join(sorted((caller_id, peer_id)))
    existing = conversation_queries.find_direct(conn, direct_key)
    if existing is not None:
        return existing, []
    conversation_id = ids.new_id(ids.CONVERSATION)
    conversation_queries.insert_conversation(
        conn,
        {
            "id": conversation_id, "kind": ConversationKind.DIRECT.value, "title": None, "topic": None,
            "direct_key": direct_key, "created_by": caller_id, "created_at": now, "updated_at": now,
            "last_seq": 0, "activity": 0, "last_activity_at": now,
        },
    )
    deliveries = _start(conn, conversation_id, caller_id, [(caller_id, Role.MEMBER), (peer_id, Role.MEMBER)], now)
    conversation = conversation_queries.get_conversation(conn, conversation_id)
    assert conversation is not None
    return conversation, deliveries


def _start(
    conn: Connection, conversation_id: str, creator_id: str, members: Sequence[tuple[str, Role]], now: datetime
) -> list[Delivery]:
    """Seat the first members and open the timeline with its `created` system message (seq 1)."""
    conversation_queries.insert_members(
        conn,
        [
            {
                "conversation_id": conversation_id, "agent_id": agent_id, "role": role.value, "joined_at": now,
                "joined_seq": 1, "left_at": None, "left_seq": None, "last_read_seq": 0,
            }
            for agent_id, role in members
        ],
    )
    notice = SystemNotice(action=SystemAction.CREATED, agent_ids=[agent_id for agent_id, _ in members])
    message = append(conn, conversation_id, sender_id=creator_id, now=now, kind=MessageKind.SYSTEM, system=notice)
    conversation = conversation_queries.get_conversation(conn, conversation_id)
    assert conversation is not None
    return [
        emit(
            conn, EventType.CONVERSATION_CREATED, conversation_id, actor_id=creator_id, now=now,
            to=recipients(conn, conversation_id), message=message, conversation=info_of(conversation),
        )
    ]


def _require_group(conversation: RowMapping) -> None:
    if conversation["kind"] != ConversationKind.GROUP:
        raise InvalidRequest("a direct conversation has exactly its two agents; this works on groups only",
                             {"field": "conversation_id"})


def _require_manager(member: RowMapping, action: str) -> None:
    if Role(member["role"]) not in MANAGERS:
        raise Forbidden(f"only the group's owners and admins may {action}")


def _active_target(conn: Connection, conversation_id: str, ref: str) -> tuple[RowMapping, RowMapping]:
    """An agent named in a call and its current membership of the conversation.

    Raises:
        NotFound: no such agent, or it is not a member.
    """
    agent = resolve_agent(conn, ref)
    member = conversation_queries.get_member(conn, conversation_id, agent["id"])
    if member is None or member["left_at"] is not None:
        raise NotFound(f"{ref!r} is not a member of this conversation", {"agent_id": ref})
    return agent, member


class ConversationService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, bus: EventBus) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._bus = bus

    async def open_direct(self, caller_id: str, ref: str) -> Conversation:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[Conversation, list[Delivery]]:
            conversation, deliveries = open_direct_txn(conn, caller_id, resolve_agent(conn, ref), now)
            member = conversation_queries.get_member(conn, conversation["id"], caller_id)
            assert member is not None
            return conversation_view(conn, conversation, member, caller_id), deliveries

        try:
            return await write_and_publish(self._store, self._bus, write)
        except IntegrityError:
            # Another node created the pair's conversation at the same moment: it exists now.
            return await write_and_publish(self._store, self._bus, write)

    async def create_group(self, caller_id: str, params: CreateGroupParams) -> ConversationDetail:
        now = self._clock.now()
        conversation_id = ids.new_id(ids.CONVERSATION)

        def write(conn: Connection) -> tuple[ConversationDetail, list[Delivery]]:
            invited = self._resolve_new_members(conn, params.members, exclude=caller_id, current=1)
            for agent in invited:
                if block_queries.blocks_agent(conn, agent["id"], caller_id):
                    raise Blocked(f"{agent['handle']} does not accept being added by you", {"agent": agent["handle"]})
            conversation_queries.insert_conversation(
                conn,
                {
                    "id": conversation_id, "kind": ConversationKind.GROUP.value, "title": params.title,
                    "topic": params.topic, "direct_key": None, "created_by": caller_id, "created_at": now,
                    "updated_at": now, "last_seq": 0, "activity": 0, "last_activity_at": now,
                },
            )
            seats = [(caller_id, Role.OWNER), *((agent["id"], Role.MEMBER) for agent in invited)]
            deliveries = _start(conn, conversation_id, caller_id, seats, now)
            conversation, member = require_member(conn, conversation_id, caller_id)
            return conversation_detail(conn, conversation, member, caller_id), deliveries

        return await write_and_publish(self._store, self._bus, write)

    def _resolve_new_members(
        self, conn: Connection, refs: Sequence[str], *, exclude: str, current: int
    ) -> list[RowMapping]:
        """The agents named to join a group, checked: each exists, none twice, the group stays in bounds.

        Raises:
            NotFound: an agent does not exist.
            InvalidRequest: an agent is named twice (or is the caller), or the group would be too big.
        """
        agents: dict[str, RowMapping] = {}
        for ref in refs:
            agent = resolve_agent(conn, ref)
            if agent["id"] in agents or agent["id"] == exclude:
                raise InvalidRequest(f"{ref!r} is named twice", {"field": "members", "agent": ref})
            agents[agent["id"]] = agent
        limit = self._settings.max_group_members
        if current + len(agents) > limit:
            raise InvalidRequest(f"a group has at most {limit} members", {"field": "members", "max_members": limit})
        return list(agents.values())

    async def get(self, caller_id: str, conversation_id: str) -> ConversationDetail:
        def read(conn: Connection) -> ConversationDetail:
            conversation, member = require_member(conn, conversation_id, caller_id)
            return conversation_detail(conn, conversation, member, caller_id)

        return await self._store.read(read, bounded=True)

    async def list_conversations(self, caller_id: str, params: ListConversationsParams) -> Page[Conversation]:
        before = cursors.decode(params.cursor, int, str)

        def read(conn: Connection) -> Page[Conversation]:
            rows = conversation_queries.list_for_agent(
                conn, caller_id, before=(before[0], before[1]) if before else None, limit=params.limit + 1
            )
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            items = conversation_views(conn, [(row, row) for row in rows], caller_id)
            next_cursor = cursors.encode(rows[-1]["activity"], rows[-1]["id"]) if more else None
            return Page[Conversation](items=items, next_cursor=next_cursor)

        return await self._store.read(read, bounded=True)

    async def update(self, caller_id: str, params: UpdateConversationParams) -> Conversation:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[Conversation, list[Delivery]]:
            conversation, member = require_member(conn, params.conversation_id, caller_id)
            _require_group(conversation)
            _require_manager(member, "change the title or topic")
            changes: dict[str, str | None] = {
                field: getattr(params, field)
                for field in ("title", "topic")
                if field in params.model_fields_set and getattr(params, field) != conversation[field]
            }
            if not changes:
                return conversation_view(conn, conversation, member, caller_id), []
            conversation_queries.update_conversation(conn, params.conversation_id, {**changes, "updated_at": now})
            notice = SystemNotice(action=SystemAction.UPDATED, fields=sorted(changes), title=changes.get("title"),
                                  topic=changes.get("topic"))
            deliveries = self._announce(conn, EventType.CONVERSATION_UPDATED, params.conversation_id, caller_id, notice,
                                        now, with_info=True)
            conversation, member = require_member(conn, params.conversation_id, caller_id)
            return conversation_view(conn, conversation, member, caller_id), deliveries

        return await write_and_publish(self._store, self._bus, write)

    async def add_members(self, caller_id: str, params: AddMembersParams) -> ConversationDetail:
        now = self._clock.now()
        conversation_id = params.conversation_id

        def write(conn: Connection) -> tuple[ConversationDetail, list[Delivery]]:
            conversation, member = require_member(conn, conversation_id, caller_id)
            _require_group(conversation)
            _require_manager(member, "add members")
            if params.role is not Role.MEMBER and member["role"] != Role.OWNER:
                raise Forbidden("only an owner may add admins or owners")
            count = conversation_queries.count_active_members(conn, conversation_id)
            agents = self._resolve_new_members(conn, params.agents, exclude="", current=count)
            for agent in agents:
                self._check_can_join(conn, conversation_id, caller_id, agent)
            notice = SystemNotice(
                action=SystemAction.MEMBERS_ADDED, agent_ids=[agent["id"] for agent in agents], role=params.role
            )
            message = append(conn, conversation_id, sender_id=caller_id, now=now, kind=MessageKind.SYSTEM,
                             system=notice)
            for agent in agents:
                seat = {"role": params.role.value, "joined_at": now, "joined_seq": message.seq, "left_at": None,
                        "left_seq": None, "last_read_seq": message.seq - 1}
                if conversation_queries.get_member(conn, conversation_id, agent["id"]) is None:
                    conversation_queries.insert_members(
                        conn, [{"conversation_id": conversation_id, "agent_id": agent["id"], **seat}]
                    )
                else:  # a former member comes back; it sees the timeline from now on, as a newcomer would
                    conversation_queries.update_member(conn, conversation_id, agent["id"], seat)
            deliveries = [
                emit(conn, EventType.MEMBERS_ADDED, conversation_id, actor_id=caller_id, now=now,
                     to=recipients(conn, conversation_id), message=message, conversation=info_of(conversation))
            ]
            conversation, member = require_member(conn, conversation_id, caller_id)
            return conversation_detail(conn, conversation, member, caller_id), deliveries

        return await write_and_publish(self._store, self._bus, write)

    @staticmethod
    def _check_can_join(conn: Connection, conversation_id: str, caller_id: str, agent: RowMapping) -> None:
        """Raises Conflict if the agent is a member already, Blocked if it blocks the group or the caller."""
        current = conversation_queries.get_member(conn, conversation_id, agent["id"])
        if current is not None and current["left_at"] is None:
            raise Conflict(f"{agent['handle']} is a member already", {"agent_id": agent["id"]})
        if block_queries.find_conversation_block(conn, agent["id"], conversation_id) is not None:
            raise Blocked(f"{agent['handle']} blocks this conversation", {"agent_id": agent["id"]})
        if block_queries.blocks_agent(conn, agent["id"], caller_id):
            raise Blocked(f"{agent['handle']} does not accept being added by you", {"agent_id": agent["id"]})

    async def remove_member(self, caller_id: str, params: RemoveMemberParams) -> ConversationDetail:
        now = self._clock.now()
        conversation_id = params.conversation_id

        def write(conn: Connection) -> tuple[ConversationDetail, list[Delivery]]:
            conversation, member = require_member(conn, conversation_id, caller_id)
            _require_group(conversation)
            _require_manager(member, "remove members")
            agent, target = _active_target(conn, conversation_id, params.agent_id)
            if agent["id"] == caller_id:
                raise InvalidRequest("to remove yourself, leave the conversation", {"field": "agent_id"})
            if member["role"] != Role.OWNER and target["role"] != Role.MEMBER:
                raise Forbidden("an admin may remove plain members only")
            notice = SystemNotice(action=SystemAction.MEMBER_REMOVED, agent_ids=[agent["id"]])
            deliveries = self._announce(conn, EventType.MEMBER_REMOVED, conversation_id, caller_id, notice, now,
                                        departing=agent["id"])
            conversation, member = require_member(conn, conversation_id, caller_id)
            return conversation_detail(conn, conversation, member, caller_id), deliveries

        return await write_and_publish(self._store, self._bus, write)

    async def set_role(self, caller_id: str, params: SetRoleParams) -> Member:
        now = self._clock.now()
        conversation_id = params.conversation_id

        def write(conn: Connection) -> tuple[Member, list[Delivery]]:
            conversation, member = require_member(conn, conversation_id, caller_id)
            _require_group(conversation)
            if member["role"] != Role.OWNER:
                raise Forbidden("only an owner may change roles")
            agent, target = _active_target(conn, conversation_id, params.agent_id)
            deliveries: list[Delivery] = []
            if target["role"] != params.role:
                if agent["id"] == caller_id and self._owners(conn, conversation_id) == [caller_id]:
                    raise Conflict("the group needs an owner: make another member owner first")
                deliveries = self._change_role(conn, conversation_id, caller_id, agent["id"], params.role, now)
            seated = next(row for row in conversation_queries.active_members(conn, conversation_id)
                          if row["agent_id"] == agent["id"])
            return member_of(seated), deliveries

        return await write_and_publish(self._store, self._bus, write)

    async def leave(self, caller_id: str, conversation_id: str) -> Empty:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[Empty, list[Delivery]]:
            conversation, member = require_member(conn, conversation_id, caller_id)
            _require_group(conversation)
            notice = SystemNotice(action=SystemAction.MEMBER_LEFT, agent_ids=[caller_id])
            deliveries = self._announce(conn, EventType.MEMBER_LEFT, conversation_id, caller_id, notice, now,
                                        departing=caller_id)
            if member["role"] == Role.OWNER and not self._owners(conn, conversation_id):
                successor = self._successor(conn, conversation_id)
                if successor is not None:
                    deliveries += self._change_role(conn, conversation_id, caller_id, successor, Role.OWNER, now)
            return Empty(), deliveries

        return await write_and_publish(self._store, self._bus, write)

    @staticmethod
    def _owners(conn: Connection, conversation_id: str) -> list[str]:
        return [row["agent_id"] for row in conversation_queries.active_members(conn, conversation_id)
                if row["role"] == Role.OWNER]

    @staticmethod
    def _successor(conn: Connection, conversation_id: str) -> str | None:
        """Who inherits ownership: the longest-standing admin, else the longest-standing member."""
        members = conversation_queries.active_members(conn, conversation_id)  # oldest first
        for role in (Role.ADMIN, Role.MEMBER):
            for row in members:
                if row["role"] == role:
                    return str(row["agent_id"])
        return None

    def _change_role(
        self, conn: Connection, conversation_id: str, actor_id: str, agent_id: str, role: Role, now: datetime
    ) -> list[Delivery]:
        conversation_queries.update_member(conn, conversation_id, agent_id, {"role": role.value})
        notice = SystemNotice(action=SystemAction.ROLE_CHANGED, agent_ids=[agent_id], role=role)
        return self._announce(conn, EventType.MEMBER_ROLE_CHANGED, conversation_id, actor_id, notice, now)

    @staticmethod
    def _announce(
        conn: Connection, type: EventType, conversation_id: str, actor_id: str, notice: SystemNotice, now: datetime,
        *, departing: str | None = None, with_info: bool = False,
    ) -> list[Delivery]:
        """Append a system message and its event. A `departing` member gets this last event, then leaves."""
        message = append(conn, conversation_id, sender_id=actor_id, now=now, kind=MessageKind.SYSTEM, system=notice)
        to = recipients(conn, conversation_id)
        if departing is not None:
            conversation_queries.update_member(
                conn, conversation_id, departing, {"left_at": now, "left_seq": message.seq}
            )
        info = None
        if with_info:
            conversation = conversation_queries.get_conversation(conn, conversation_id)
            assert conversation is not None
            info = info_of(conversation)
        return [emit(conn, type, conversation_id, actor_id=actor_id, now=now, to=to, message=message,
                     conversation=info)]
