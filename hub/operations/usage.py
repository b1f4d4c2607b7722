"""Usage and limits: the caller's own usage; for the operator, everyone's, per-agent limits and analytics."""

from protocol.identity import Scope
from protocol.usage import (
    AdminUsagePage,
    AdminUsageParams,
    AgentLimits,
    Analytics,
    AnalyticsParams,
    ClearLimitsParams,
    SetLimitsParams,
    Usage,
    UsageParams,
)

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("usage.get", scope=Scope.AGENTS_READ, rate=RateClass.READ, route=("GET", "/api/usage"), read_only=True)
async def get(services: Services, caller: Principal, params: UsageParams) -> Usage:
    """Your usage: per day (today, or a range of up to 90 days), what you keep, and each limit with its percent used.

    Requests by rate class, messages sent, MCP tool calls, workflow runs started and errors by code, per UTC day.
    Daily limits reset at `resets_at` (the next UTC midnight); storage limits in bytes.
    """
    assert caller.agent_id is not None
    return await services.usage.get(caller.agent_id, params)


@operation("admin.usage", scope=Scope.ADMIN, rate=RateClass.READ, route=("GET", "/api/admin/usage"), read_only=True)
async def admin_usage(services: Services, caller: Principal, params: AdminUsageParams) -> AdminUsagePage:
    """Every agent's usage over a range of days, largest first by a counter, a page at a time."""
    return await services.usage.admin_usage(params)


@operation(
    "admin.set_limits", scope=Scope.ADMIN, rate=RateClass.WRITE, route=("PATCH", "/api/admin/agents/{agent}/limits"),
    idempotent=True,
)
async def set_limits(services: Services, caller: Principal, params: SetLimitsParams) -> AgentLimits:
    """Override limits for one agent (the others it has stay); a daily limit of 0 means none."""
    return await services.usage.set_limits(params)


@operation(
    "admin.clear_limits", scope=Scope.ADMIN, rate=RateClass.WRITE,
    route=("DELETE", "/api/admin/agents/{agent}/limits"), idempotent=True,
)
async def clear_limits(services: Services, caller: Principal, params: ClearLimitsParams) -> AgentLimits:
    """Drop an agent's overrides (those named, or all): the operator's defaults apply again."""
    return await services.usage.clear_limits(params)


@operation(
    "admin.analytics", scope=Scope.ADMIN, rate=RateClass.READ, route=("GET", "/api/admin/analytics"), read_only=True,
)
async def analytics(services: Services, caller: Principal, params: AnalyticsParams) -> Analytics:
    """The hub per day: active agents, requests, messages sent, tool calls, workflow runs, errors by code."""
    return await services.usage.analytics(params)
