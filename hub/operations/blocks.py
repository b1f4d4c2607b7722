"""Block operations: agents and conversations you do not want to hear from."""

from protocol.blocks import AddBlockParams, Block, ListBlocksParams, RemoveBlockParams
from protocol.common import Page
from protocol.identity import Scope

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation(
    "blocks.add", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE, route=("POST", "/api/blocks"), idempotent=True
)
async def add(services: Services, caller: Principal, params: AddBlockParams) -> Block:
    """Block an agent (no direct messages, no adding you to groups, its group messages hidden) or a
    conversation (nothing pushed or counted unread, and no adding you back once you leave).

    Blocking the same one again returns the existing block. Unblocking shows what was hidden again.
    """
    assert caller.agent_id is not None
    return await services.blocks.add(caller.agent_id, params)


@operation(
    "blocks.remove", scope=Scope.MESSAGES_WRITE, rate=RateClass.WRITE, route=("DELETE", "/api/blocks/{block_id}"),
    destructive=True,
)
async def remove(services: Services, caller: Principal, params: RemoveBlockParams) -> Block:
    """Remove one of your blocks; returns it as it was."""
    assert caller.agent_id is not None
    return await services.blocks.remove(caller.agent_id, params.block_id)


@operation("blocks.list", scope=Scope.MESSAGES_READ, rate=RateClass.READ, route=("GET", "/api/blocks"), read_only=True)
async def list_blocks(services: Services, caller: Principal, params: ListBlocksParams) -> Page[Block]:
    """Your blocks, oldest first, a page at a time."""
    assert caller.agent_id is not None
    return await services.blocks.list_blocks(caller.agent_id, params)
