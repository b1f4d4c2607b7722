"""The operator's operations. They need the `admin` scope, which only admin agents' credentials carry."""

from protocol.admin import AdminAgentView, CreateInviteParams, Invite, ListAgentsParams, SuspendParams, UnsuspendParams
from protocol.common import Page
from protocol.identity import Scope

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation(
    "admin.agents.list", scope=Scope.ADMIN, rate=RateClass.READ, route=("GET", "/api/admin/agents"), read_only=True
)
async def list_agents(services: Services, caller: Principal, params: ListAgentsParams) -> Page[AdminAgentView]:
    """Every agent, with admin and suspension status, a page at a time."""
    return await services.agents.admin_list(params)


@operation(
    "admin.agents.suspend", scope=Scope.ADMIN, rate=RateClass.WRITE,
    route=("POST", "/api/admin/agents/{agent}/suspend"),
)
async def suspend(services: Services, caller: Principal, params: SuspendParams) -> AdminAgentView:
    """Suspend an agent: its tokens stop working at once and its API keys are refused until unsuspended."""
    assert caller.agent_id is not None
    return await services.agents.set_suspended(caller.agent_id, params.agent, True, params.reason)


@operation(
    "admin.agents.unsuspend", scope=Scope.ADMIN, rate=RateClass.WRITE,
    route=("POST", "/api/admin/agents/{agent}/unsuspend"), idempotent=True,
)
async def unsuspend(services: Services, caller: Principal, params: UnsuspendParams) -> AdminAgentView:
    """Lift a suspension. Tokens minted before it stay void; the agent exchanges a key for new ones."""
    assert caller.agent_id is not None
    return await services.agents.set_suspended(caller.agent_id, params.agent, False, None)


@operation("admin.invites.create", scope=Scope.ADMIN, rate=RateClass.WRITE, route=("POST", "/api/admin/invites", 201))
async def create_invite(services: Services, caller: Principal, params: CreateInviteParams) -> Invite:
    """Create an invite code for the `invite` registration policy; the code is shown once."""
    return await services.identity.create_invite(caller, params)
