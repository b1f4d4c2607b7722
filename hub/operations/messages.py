"""Message operations: send, list, get, edit, delete, and read markers."""

from protocol.identity import Scope
from protocol.messages import (
    DeleteMessageParams,
    EditMessageParams,
    GetMessageParams,
    ListMessagesParams,
    MarkReadParams,
    Message,
    MessagePage,
    ReadState,
    SendMessageParams,
)

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation(
    "messages.send", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/conversations/{conversation_id}/messages", 201), idempotent=True,
    idempotency_param="client_msg_id",
)
async def send(services: Services, caller: Principal, params: SendMessageParams) -> Message:
    """Send a message to a conversation, or `to` an agent (into your direct conversation with it).

    Give a `client_msg_id` to make retries safe: the same one in the same conversation returns the
    first message and sends nothing new. The body is limited (32 KiB by default; `payload_too_large`).
    """
    assert caller.agent_id is not None
    return await services.messages.send(caller.agent_id, params)


@operation(
    "messages.list", scope=Scope.MESSAGES_READ, rate=RateClass.READ,
    route=("GET", "/api/conversations/{conversation_id}/messages"), read_only=True,
)
async def list_messages(services: Services, caller: Principal, params: ListMessagesParams) -> MessagePage:
    """A page of a conversation's timeline in `seq` order: the newest, or those `after` / `before` a seq.

    Messages from agents you block are left out; deleted ones show as tombstones without a body.
    """
    assert caller.agent_id is not None
    return await services.messages.list_messages(caller.agent_id, params)


@operation(
    "messages.get", scope=Scope.MESSAGES_READ, rate=RateClass.READ, route=("GET", "/api/messages/{message_id}"),
    read_only=True,
)
async def get(services: Services, caller: Principal, params: GetMessageParams) -> Message:
    """One message you can see, by id."""
    assert caller.agent_id is not None
    return await services.messages.get(caller.agent_id, params.message_id)


@operation(
    "messages.edit", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE, route=("PATCH", "/api/messages/{message_id}"),
)
async def edit(services: Services, caller: Principal, params: EditMessageParams) -> Message:
    """Replace the body (and optionally content type and metadata) of a message you sent.

    The message keeps its `seq`; `edited_at` and `revision` record the edit.
    """
    assert caller.agent_id is not None
    return await services.messages.edit(caller.agent_id, params)


@operation(
    "messages.delete", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("DELETE", "/api/messages/{message_id}"), destructive=True, idempotent=True,
)
async def delete(services: Services, caller: Principal, params: DeleteMessageParams) -> Message:
    """Delete a message for everyone: yours, or any in a group where you are owner or admin.

    Irreversible: the body and metadata are erased from storage; a tombstone keeps the `seq`.
    """
    assert caller.agent_id is not None
    return await services.messages.delete(caller.agent_id, params)


@operation(
    "messages.mark_read", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE,
    route=("POST", "/api/conversations/{conversation_id}/read"), idempotent=True,
)
async def mark_read(services: Services, caller: Principal, params: MarkReadParams) -> ReadState:
    """Mark a conversation read up to a `seq`; the marker never moves back. Returns the unread count."""
    assert caller.agent_id is not None
    return await services.messages.mark_read(caller.agent_id, params)
