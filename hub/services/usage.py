"""Usage and limits: an agent's own, and the operator's view across agents (`hub/usage.py` counts).

Every read flushes this node's counts first, so what it answers is exact for this node and, for
other nodes, as of their last flush.
"""

from collections.abc import Callable
from datetime import date, timedelta
from typing import Final

from sqlalchemy import Connection

from protocol.errors import ErrorCode, InvalidRequest
from protocol.usage import (
    MAX_RANGE_DAYS,
    AdminUsagePage,
    AdminUsageParams,
    AgentLimits,
    AgentUsage,
    Analytics,
    AnalyticsParams,
    ClearLimitsParams,
    DayAnalytics,
    DayUsage,
    LimitName,
    LimitUse,
    SetLimitsParams,
    SortCounter,
    Stored,
    Usage,
    UsageParams,
)
from storage.queries import usage as usage_queries
from storage.store import Store

from ..clock import Clock
from ..config import Settings
from ..ratelimit import RateClass
from ..usage import (
    DAILY_COUNTERS,
    ERRORS,
    EXECUTIONS_STARTED,
    MESSAGES_SENT,
    REQUESTS,
    TOOL_CALLS,
    UsageMeter,
    effective_limits,
    memory_quota,
    next_midnight,
    storage_quota,
)
from . import cursors
from .conversations import resolve_agent

STORAGE_KINDS: Final = (usage_queries.MESSAGES, usage_queries.MEMORIES, usage_queries.FILES, usage_queries.DOCUMENTS)
REQUEST_COUNTERS: Final = [f"{REQUESTS}{rate_class.value}" for rate_class in RateClass]
ERROR_PREFIX_LEN: Final = len(ERRORS)
MAX_OFFSET: Final = 10**9


def _day_usage(day: date, counters: dict[str, int]) -> DayUsage:
    return DayUsage(
        day=day,
        requests={name[len(REQUESTS):]: n for name, n in counters.items() if name.startswith(REQUESTS) and n},
        messages_sent=counters.get(MESSAGES_SENT, 0),
        tool_calls=counters.get(TOOL_CALLS, 0),
        executions_started=counters.get(EXECUTIONS_STARTED, 0),
        errors={name[ERROR_PREFIX_LEN:]: n for name, n in counters.items() if name.startswith(ERRORS) and n},
    )


def _added(rows: list[tuple[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for counter, value in rows:
        total[counter] = total.get(counter, 0) + value
    return total


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _percent(used: int, limit: int | None) -> float | None:
    return None if limit is None else round(100 * used / limit, 2) if limit else 100.0


SORT_COUNTERS: Final = {
    SortCounter.REQUESTS: REQUEST_COUNTERS,
    SortCounter.MESSAGES_SENT: [MESSAGES_SENT],
    SortCounter.TOOL_CALLS: [TOOL_CALLS],
    SortCounter.EXECUTIONS_STARTED: [EXECUTIONS_STARTED],
    SortCounter.ERRORS: [f"{ERRORS}{code.value}" for code in ErrorCode],
}


class UsageService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, meter: UsageMeter) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._meter = meter

    def _range(self, first: date | None, last: date | None) -> tuple[date, date]:
        """The days asked for, checked.

        Raises:
            InvalidRequest: days to come, a range that ends before it starts, or longer than MAX_RANGE_DAYS.
        """
        today = self._clock.now().date()
        last = last or today
        first = first or last
        if last > today:
            raise InvalidRequest(f"to_day is after today ({today.isoformat()}, UTC): nothing is counted yet",
                                 {"field": "to_day"})
        if first > last:
            raise InvalidRequest("from_day is after to_day", {"field": "from_day"})
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise InvalidRequest(f"a range is at most {MAX_RANGE_DAYS} days", {"field": "from_day",
                                                                              "max_days": MAX_RANGE_DAYS})
        return first, last

    async def get(self, caller_id: str, params: UsageParams) -> Usage:
        first, last = self._range(params.from_day, params.to_day)
        today = self._clock.now().date()
        await self._meter.flush()

        def read(conn: Connection) -> Usage:
            rows = usage_queries.usage_of(conn, [caller_id], first.isoformat(), today.isoformat())
            by_day: dict[str, list[tuple[str, int]]] = {}
            for _, day, counter, value in rows:
                by_day.setdefault(day, []).append((counter, value))
            days = [_day_usage(day, _added(by_day.get(day.isoformat(), []))) for day in _days(first, last)]
            in_range = [pair for day, pairs in by_day.items() if day <= last.isoformat() for pair in pairs]
            kept = usage_queries.storage_of(conn, caller_id)
            storage = {kind: Stored(items=kept.get(kind, (0, 0))[0], bytes=kept.get(kind, (0, 0))[1])
                       for kind in STORAGE_KINDS}
            limits = effective_limits(self._settings, usage_queries.limits_of(conn, caller_id))
            quota_bytes = {LimitName.STORAGE_MB: storage_quota(conn, self._settings, caller_id),
                           LimitName.MEMORY_MB: memory_quota(conn, self._settings, caller_id)}
            today_counts = _added(by_day.get(today.isoformat(), []))
            uses = {}
            for name, limit in limits.items():
                if name in DAILY_COUNTERS:
                    used, resets_at = today_counts.get(DAILY_COUNTERS[name], 0), next_midnight(today)
                    uses[name] = LimitUse(limit=limit, used=used, percent=_percent(used, limit), resets_at=resets_at)
                else:
                    kinds = ((usage_queries.MEMORIES,) if name is LimitName.MEMORY_MB
                             else (usage_queries.FILES, usage_queries.DOCUMENTS))
                    used = sum(storage[kind].bytes for kind in kinds)
                    uses[name] = LimitUse(limit=quota_bytes[name], used=used, percent=_percent(used, quota_bytes[name]),
                                          resets_at=None)
            return Usage(agent_id=caller_id, from_day=first, to_day=last, days=days,
                         total=_day_usage(last, _added(in_range)), storage=storage, limits=uses)

        return await self._store.read(read)

    async def admin_usage(self, params: AdminUsageParams) -> AdminUsagePage:
        first, last = self._range(params.from_day, params.to_day)
        position = cursors.decode(params.cursor, int)
        offset = position[0] if position else 0
        if not 0 <= offset <= MAX_OFFSET:  # only a hand-made cursor gets here
            raise InvalidRequest("the cursor is not one this hub issued", {"field": "cursor"})
        await self._meter.flush()

        def read(conn: Connection) -> AdminUsagePage:
            ranked = usage_queries.agents_by_usage(conn, first.isoformat(), last.isoformat(),
                                                   SORT_COUNTERS[params.sort], offset, params.limit + 1)
            page = [agent_id for agent_id, _ in ranked[:params.limit]]
            rows = usage_queries.usage_of(conn, page, first.isoformat(), last.isoformat())
            handles = usage_queries.handles(conn, page)
            items = [AgentUsage(agent_id=agent_id, handle=handles.get(agent_id),
                                total=_day_usage(last, _added([(c, v) for a, _, c, v in rows if a == agent_id])))
                     for agent_id in page]
            more = len(ranked) > params.limit
            return AdminUsagePage(from_day=first, to_day=last, items=items,
                                  next_cursor=cursors.encode(offset + params.limit) if more else None)

        return await self._store.read(read)

    async def analytics(self, params: AnalyticsParams) -> Analytics:
        first, last = self._range(params.from_day, params.to_day)
        await self._meter.flush()

        def read(conn: Connection) -> Analytics:
            totals: dict[str, list[tuple[str, int]]] = {}
            for day, counter, value in usage_queries.totals_by_day(conn, first.isoformat(), last.isoformat()):
                totals.setdefault(day, []).append((counter, value))
            active = usage_queries.active_by_day(conn, first.isoformat(), last.isoformat(), REQUEST_COUNTERS)
            days = []
            for day in _days(first, last):
                usage = _day_usage(day, _added(totals.get(day.isoformat(), [])))
                days.append(DayAnalytics(day=day, active_agents=active.get(day.isoformat(), 0),
                                         requests=sum(usage.requests.values()), messages_sent=usage.messages_sent,
                                         tool_calls=usage.tool_calls, executions_started=usage.executions_started,
                                         errors=usage.errors))
            return Analytics(from_day=first, to_day=last, days=days)

        return await self._store.read(read)

    async def set_limits(self, params: SetLimitsParams) -> AgentLimits:
        given = {name: value for name in LimitName
                 if (value := getattr(params, name.value)) is not None}
        if not given:
            raise InvalidRequest("give at least one limit to set", {"field": "messages_per_day"})
        return await self._change_limits(params.agent, lambda limits: {**limits, **given})

    async def clear_limits(self, params: ClearLimitsParams) -> AgentLimits:
        names = set(params.names) if params.names is not None else set(LimitName)
        return await self._change_limits(params.agent, lambda limits: {
            name: value for name, value in limits.items() if name not in names})

    async def _change_limits(self, agent: str, change: Callable[[dict[str, int]], dict[str, int]]) -> AgentLimits:
        now = self._clock.now()

        def write(conn: Connection) -> AgentLimits:
            agent_id = resolve_agent(conn, agent)["id"]
            limits = change(usage_queries.limits_of(conn, agent_id))
            usage_queries.put_limits(conn, agent_id, limits, now)
            return AgentLimits(agent_id=agent_id, overrides={LimitName(k): v for k, v in limits.items()},
                               effective=effective_limits(self._settings, limits))

        changed = await self._store.write(write)
        self._meter.forget_limits(changed.agent_id)
        return changed

