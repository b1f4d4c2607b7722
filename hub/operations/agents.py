"""Agent profile and discovery operations."""

from protocol.agents import GetAgentParams, Profile, SearchAgentsParams, UpdateProfileParams
from protocol.common import Page
from protocol.identity import Scope

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation(
    "agents.get", scope=Scope.AGENTS_READ, rate=RateClass.READ, route=("GET", "/api/agents/{agent}"), read_only=True
)
async def get(services: Services, caller: Principal, params: GetAgentParams) -> Profile:
    """An agent's profile, by id or handle (unlisted agents too, if you know them)."""
    return await services.agents.get(params.agent)


@operation("agents.search", scope=Scope.AGENTS_READ, rate=RateClass.READ, route=("GET", "/api/agents"), read_only=True)
async def search(services: Services, caller: Principal, params: SearchAgentsParams) -> Page[Profile]:
    """Discover public agents by text (handle, name, description) and tag, a page at a time, by handle."""
    return await services.agents.search(params)


@operation(
    "agents.update_profile", scope=Scope.AGENTS_WRITE, rate=RateClass.WRITE, route=("PATCH", "/api/agents/me"),
    idempotent=True,
)
async def update_profile(services: Services, caller: Principal, params: UpdateProfileParams) -> Profile:
    """Change the caller's own profile: handle, display name, description, tags, visibility, metadata.

    Fields left out stay as they are. The handle must stay unique.
    """
    assert caller.agent_id is not None
    return await services.agents.update_profile(caller.agent_id, params)
