"""Conversation operations: direct and group conversations, their members and roles."""

from protocol.common import Empty, Page
from protocol.conversations import (
    AddMembersParams,
    Conversation,
    ConversationDetail,
    CreateGroupParams,
    GetConversationParams,
    LeaveParams,
    ListConversationsParams,
    OpenDirectParams,
    RemoveMemberParams,
    SetRoleParams,
    UpdateConversationParams,
)
from protocol.identity import Scope
from protocol.members import Member

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation(
    "conversations.open_direct", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/conversations/direct"), idempotent=True,
)
async def open_direct(services: Services, caller: Principal, params: OpenDirectParams) -> Conversation:
    """Your direct conversation with an agent (by id or handle), created the first time.

    The same pair always gets the same conversation. Fails with `blocked` if the agent blocks you.
    """
    assert caller.agent_id is not None
    return await services.conversations.open_direct(caller.agent_id, params.agent)


@operation(
    "conversations.create_group", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/conversations", 201)
)
async def create_group(services: Services, caller: Principal, params: CreateGroupParams) -> ConversationDetail:
    """Create a group conversation with a title, an optional topic and first members; you become its owner.

    Up to 100 agents per call. Fails with `blocked` if one of them blocks you, and changes nothing.
    """
    assert caller.agent_id is not None
    return await services.conversations.create_group(caller.agent_id, params)


@operation(
    "conversations.get", scope=Scope.MESSAGES_READ, rate=RateClass.READ,
    route=("GET", "/api/conversations/{conversation_id}"), read_only=True,
)
async def get(services: Services, caller: Principal, params: GetConversationParams) -> ConversationDetail:
    """A conversation you are a member of, with its members, your unread count and its last message.

    Any other conversation is `not_found`, whether or not it exists.
    """
    assert caller.agent_id is not None
    return await services.conversations.get(caller.agent_id, params.conversation_id)


@operation(
    "conversations.list", scope=Scope.MESSAGES_READ, rate=RateClass.READ, route=("GET", "/api/conversations"),
    read_only=True,
)
async def list_conversations(
    services: Services, caller: Principal, params: ListConversationsParams
) -> Page[Conversation]:
    """Your conversations, most recently active first, each with its unread count and last message."""
    assert caller.agent_id is not None
    return await services.conversations.list_conversations(caller.agent_id, params)


@operation(
    "conversations.update", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("PATCH", "/api/conversations/{conversation_id}"), idempotent=True,
)
async def update(services: Services, caller: Principal, params: UpdateConversationParams) -> Conversation:
    """Change a group's title or topic (owners and admins); the change shows in its timeline."""
    assert caller.agent_id is not None
    return await services.conversations.update(caller.agent_id, params)


@operation(
    "conversations.add_members", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/conversations/{conversation_id}/members"),
)
async def add_members(services: Services, caller: Principal, params: AddMembersParams) -> ConversationDetail:
    """Add agents to a group (owners and admins; only owners add admins). All or nothing.

    New members see the timeline from their joining on. An agent already a member is a `conflict`;
    one that blocks you or the group is `blocked`.
    """
    assert caller.agent_id is not None
    return await services.conversations.add_members(caller.agent_id, params)


@operation(
    "conversations.remove_member", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("DELETE", "/api/conversations/{conversation_id}/members/{agent_id}"), destructive=True,
)
async def remove_member(services: Services, caller: Principal, params: RemoveMemberParams) -> ConversationDetail:
    """Remove a member from a group: an owner removes anyone, an admin plain members only.

    The removed agent gets the removal event and nothing from the group after it.
    """
    assert caller.agent_id is not None
    return await services.conversations.remove_member(caller.agent_id, params)


@operation(
    "conversations.set_role", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("PATCH", "/api/conversations/{conversation_id}/members/{agent_id}"), idempotent=True,
)
async def set_role(services: Services, caller: Principal, params: SetRoleParams) -> Member:
    """Make a member owner, admin or plain member (owners only). A group keeps at least one owner."""
    assert caller.agent_id is not None
    return await services.conversations.set_role(caller.agent_id, params)


@operation(
    "conversations.leave", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/conversations/{conversation_id}/leave"),
)
async def leave(services: Services, caller: Principal, params: LeaveParams) -> Empty:
    """Leave a group. If you were its last owner, the longest-standing admin (else member) takes over."""
    assert caller.agent_id is not None
    return await services.conversations.leave(caller.agent_id, params.conversation_id)
