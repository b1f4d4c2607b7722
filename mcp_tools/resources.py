"""Resources: the caller's inbox, one conversation, one agent's profile, its pinned memories (JSON), and
one document's text (plain text).

`parley://inbox`, `parley://conversations/{id}`, `parley://memories/pinned` and `parley://documents/{id}`
change when the caller's events say so: a client may subscribe to them (see `push`). Each read is the
caller's own view (like the tools, the caller comes from the request, never from the URI).
"""

import json
from collections.abc import Awaitable, Callable
from typing import Final

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel

from protocol.errors import HubError

from .access import Access, HubCaller
from .tools.conversations import load_inbox, load_thread
from .tools.views import agent_card

INBOX_URI: Final = "parley://inbox"
PINNED_MEMORIES_URI: Final = "parley://memories/pinned"
DOCUMENT_PREFIX: Final = "parley://documents/"
PINNED_SIZE: Final = 50
CONVERSATION_PREFIX: Final = "parley://conversations/"
AGENT_PREFIX: Final = "parley://agents/"
JSON: Final = "application/json"
INBOX_SIZE: Final = 50
THREAD_SIZE: Final = 50


class PinnedMemory(BaseModel):
    id: str
    content: str
    category: str | None = None
    importance: int


class Pinned(BaseModel):
    memories: list[PinnedMemory]


def document_uri(document_id: str) -> str:
    return DOCUMENT_PREFIX + document_id


def conversation_uri(conversation_id: str) -> str:
    return CONVERSATION_PREFIX + conversation_id


def resource_error(error: HubError, uri: str) -> MCPError:
    """A hub refusal as a JSON-RPC error: `not_found` as the MCP resource-not-found (-32602), else the
    hub's own code; `data` carries the hub's `code` either way."""
    code = INVALID_PARAMS if error.code.value == "not_found" else error.jsonrpc_code
    return MCPError(code=code, message=error.message, data={**error.to_dict(), "uri": uri})


async def _read(access: Access, uri: str, render: Callable[[HubCaller], Awaitable[BaseModel]]) -> str:
    try:
        result = await render(await access.caller())
    except HubError as error:
        raise resource_error(error, uri) from None
    return json.dumps(result.model_dump(mode="json", exclude_none=True), separators=(",", ":"), ensure_ascii=False)


def add_resources(server: MCPServer, access: Access) -> None:
    @server.resource(INBOX_URI, name="inbox", title="Inbox", mime_type=JSON,
                     description="Your conversations, most recent first, with unread counts.")
    async def inbox() -> str:
        return await _read(access, INBOX_URI, lambda hub: load_inbox(hub, INBOX_SIZE))

    @server.resource(CONVERSATION_PREFIX + "{conversation_id}", name="conversation", title="Conversation",
                     mime_type=JSON, description="A conversation's newest messages and your unread count.")
    async def conversation(conversation_id: str) -> str:
        return await _read(access, conversation_uri(conversation_id),
                           lambda hub: load_thread(hub, conversation_id, limit=THREAD_SIZE, unread_only=False))

    @server.resource(PINNED_MEMORIES_URI, name="pinned_memories", title="Pinned memories", mime_type=JSON,
                     description="Your pinned private memories, most important first: context worth attaching.")
    async def pinned_memories() -> str:
        async def render(hub: HubCaller) -> BaseModel:
            page = await hub.call("memories.list", {"pinned": True, "order": "importance", "limit": PINNED_SIZE})
            return Pinned(memories=[PinnedMemory(id=m["memory_id"], content=m["content"], category=m.get("category"),
                                                 importance=m["importance"]) for m in page["items"]])

        return await _read(access, PINNED_MEMORIES_URI, render)

    @server.resource(DOCUMENT_PREFIX + "{document_id}", name="document", title="Document", mime_type="text/plain",
                     description="A document of your store (or a conversation's): its title and text.")
    async def document(document_id: str) -> str:
        try:
            found = await (await access.caller()).call("documents.text", {"document_id": document_id})
        except HubError as error:
            raise resource_error(error, document_uri(document_id)) from None
        return f"# {found['document']['title']}\n\n{found['text']}"

    @server.resource(AGENT_PREFIX + "{handle}", name="agent", title="Agent profile", mime_type=JSON,
                     description="An agent's profile, by handle.")
    async def agent(handle: str) -> str:
        async def render(hub: HubCaller) -> BaseModel:
            return agent_card(await hub.call("agents.get", {"agent": handle}), full=True)

        return await _read(access, AGENT_PREFIX + handle, render)
