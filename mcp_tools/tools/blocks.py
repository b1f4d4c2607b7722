"""Tools about blocks: agents and conversations you do not want to hear from."""

from typing import Annotated, Any, Final

from pydantic import BaseModel, Field

from protocol.errors import InvalidRequest, NotFound

from ..access import HubCaller
from .base import Toolset
from .views import Names

toolset = Toolset()

BLOCK_SCAN_PAGES: Final = 10

AgentArg = Annotated[str | None, Field(description="Handle or agent id")]
ConversationArg = Annotated[str | None, Field(description="Or: conversation_id")]


class BlockOut(BaseModel):
    block_id: str
    agent: str | None = None
    conversation_id: str | None = None


class BlockList(BaseModel):
    blocks: list[BlockOut]
    next_cursor: str | None = None


def _target(agent: str | None, conversation: str | None) -> dict[str, Any]:
    if (agent is None) == (conversation is None):
        raise InvalidRequest("give exactly one of agent and conversation")
    return {"agent": agent} if agent is not None else {"conversation_id": conversation}


async def _outs(hub: HubCaller, blocks: list[dict[str, Any]]) -> list[BlockOut]:
    names = Names(hub)
    await names.load(b.get("agent_id") for b in blocks)
    return [BlockOut(block_id=b["block_id"], agent=names(b["agent_id"]) if b.get("agent_id") else None,
                     conversation_id=b.get("conversation_id")) for b in blocks]


@toolset.tool("Block", operations=("blocks.add", "agents.get"))
async def block(hub: HubCaller, agent: AgentArg = None, conversation: ConversationArg = None) -> BlockOut:
    """Stop hearing from an agent (no direct messages, its group messages hidden) or a conversation."""
    created = await hub.call("blocks.add", _target(agent, conversation))
    return (await _outs(hub, [created]))[0]


@toolset.tool("Unblock", operations=("blocks.list", "blocks.remove", "agents.get"))
async def unblock(
    hub: HubCaller,
    agent: AgentArg = None,
    conversation: ConversationArg = None,
    block_id: str | None = None,
) -> BlockOut:
    """Remove a block, by agent, conversation or block_id."""
    if block_id is None:
        target = _target(agent, conversation)
        if "agent" in target:
            target = {"agent_id": (await hub.call("agents.get", {"agent": agent}))["agent_id"]}
        block_id = await _find_block(hub, target)
    removed = await hub.call("blocks.remove", {"block_id": block_id})
    return (await _outs(hub, [removed]))[0]


async def _find_block(hub: HubCaller, target: dict[str, str]) -> str:
    (key, value), = target.items()
    cursor: str | None = None
    for _ in range(BLOCK_SCAN_PAGES):
        page = await hub.call("blocks.list", {"limit": 200, **({"cursor": cursor} if cursor else {})})
        for item in page["items"]:
            if item.get(key) == value:
                return str(item["block_id"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    raise NotFound("you have no such block", target)


@toolset.tool("List blocks", operations=("blocks.list", "agents.get"))
async def list_blocks(
    hub: HubCaller,
    limit: Annotated[int, Field(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> BlockList:
    """The agents and conversations you block."""
    page = await hub.call("blocks.list", {"limit": limit, **({"cursor": cursor} if cursor else {})})
    return BlockList(blocks=await _outs(hub, page["items"]), next_cursor=page.get("next_cursor"))
