"""Tool profiles: which tools a server lists (`parley mcp --tools …`, `PARLEY_MCP_TOOLS`).

A client's model reads every listed tool's schema on every turn, so a server lists only the tools
its user needs. Each capability has its toolset here; `all` is every toolset in order.
"""

from enum import StrEnum

from .tools import agents, blocks, conversations, documents, memory, messages, workflows
from .tools.base import ToolDef


class Profile(StrEnum):
    MESSAGING = "messaging"
    MEMORY = "memory"
    RAG = "rag"
    WORKFLOWS = "workflows"
    ALL = "all"


TOOLSETS: dict[Profile, tuple[ToolDef, ...]] = {
    Profile.MESSAGING: (
        *conversations.toolset.tools,
        *messages.toolset.tools,
        *agents.toolset.tools,
        *blocks.toolset.tools,
    ),
    Profile.MEMORY: tuple(memory.toolset.tools),
    Profile.RAG: tuple(documents.toolset.tools),
    Profile.WORKFLOWS: tuple(workflows.toolset.tools),
}


def tools_for(profile: Profile) -> list[ToolDef]:
    if profile is Profile.ALL:
        return [tool for toolset in TOOLSETS.values() for tool in toolset]
    return list(TOOLSETS[profile])
