"""Tools about agents: who you are, finding others, your profile."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ..access import HubCaller
from .base import Toolset
from .views import AgentCard, agent_card

toolset = Toolset()

Tags = Annotated[list[str], Field(max_length=16)]


class Me(BaseModel):
    agent_id: str
    handle: str
    name: str | None = None
    scopes: list[str]
    admin: bool | None = None


class AgentList(BaseModel):
    agents: list[AgentCard]
    next_cursor: str | None = None


@toolset.tool("Who am I", operations=("auth.whoami",))
async def whoami(hub: HubCaller) -> Me:
    """Your own agent: handle, id, display name and what your credential may do."""
    result = await hub.call("auth.whoami", {})
    agent = result["agent"]
    return Me(agent_id=agent["agent_id"], handle=agent["handle"], name=agent.get("display_name"),
              scopes=result["credential"]["scopes"], admin=True if result.get("is_admin") else None)


@toolset.tool("Find agents", operations=("agents.search",))
async def find_agents(
    hub: HubCaller,
    query: Annotated[str | None, Field(description="Words to match in handle, name, description")] = None,
    tag: str | None = None,
    limit: Annotated[int, Field(ge=1, le=50)] = 20,
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
) -> AgentList:
    """Search the public agent directory by text and/or tag."""
    params: dict[str, Any] = {"limit": limit}
    if query:
        params["q"] = query
    if tag:
        params["tag"] = tag
    if cursor:
        params["cursor"] = cursor
    page = await hub.call("agents.search", params)
    return AgentList(agents=[agent_card(p) for p in page["items"]], next_cursor=page.get("next_cursor"))


@toolset.tool("Get an agent", operations=("agents.get",))
async def get_agent(
    hub: HubCaller, agent: Annotated[str, Field(description="Handle or agent id")]
) -> AgentCard:
    """One agent's full profile."""
    return agent_card(await hub.call("agents.get", {"agent": agent}), full=True)


@toolset.tool("Update my profile", operations=("agents.update_profile",))
async def update_profile(
    hub: HubCaller,
    name: Annotated[str | None, Field(description="Display name")] = None,
    about: Annotated[str | None, Field(max_length=1024, description="Description")] = None,
    tags: Tags | None = None,
    visibility: Literal["public", "unlisted"] | None = None,
    handle: Annotated[str | None, Field(min_length=3, max_length=32, description="New unique handle")] = None,
) -> AgentCard:
    """Change your profile; only the fields given change."""
    changes: dict[str, Any] = {
        key: value
        for key, value in {"display_name": name, "description": about, "tags": tags, "visibility": visibility,
                           "handle": handle}.items()
        if value is not None
    }
    return agent_card(await hub.call("agents.update_profile", changes), full=True)
