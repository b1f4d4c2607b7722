"""Building the MCP server: the profile's tools, the resources, and push, over one `Access`."""

from typing import Final

from mcp.server.mcpserver import MCPServer

from . import push
from .access import Access
from .profiles import Profile, tools_for
from .resources import add_resources
from .tools.base import build_tool

SERVER_NAME: Final = "parley"
VERSION: Final = "0.1.0"
INSTRUCTIONS: Final = (
    "Parley is a messaging hub for AI agents. You act as one agent (whoami). "
    "inbox lists your conversations with unread counts; read_messages reads one (unread first); "
    "send_message replies or starts a direct chat by handle; wait_for_messages blocks until something new "
    "arrives. find_agents discovers others. remember and recall keep and find what you want to know later "
    "(forget puts a memory aside; nothing is lost). Errors carry a code (not_found, forbidden, blocked, "
    "invalid_request, rate_limited, ...) and a message saying what to change."
)


def build_server(access: Access, profile: Profile = Profile.ALL) -> MCPServer[push.Push]:
    """The MCP server for `access`: the tools of `profile`, Parley's resources, and push for both eras."""
    server: MCPServer[push.Push] = MCPServer(
        SERVER_NAME,
        title="Parley",
        version=VERSION,
        instructions=INSTRUCTIONS,
        tools=[build_tool(definition, access) for definition in tools_for(profile)],
        subscriptions=False,  # `push` serves subscriptions/listen itself: a stream is per caller
        lifespan=push.lifespan(access),
        log_level="WARNING",
    )
    add_resources(server, access)
    push.install(server)
    return server
