"""Models of usage, limits and the operator's analytics."""

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field

from .common import DEFAULT_PAGE_SIZE, Cursor, IsoDay, Model, PageLimit

MAX_RANGE_DAYS: Final = 90


class LimitName(StrEnum):
    MESSAGES_PER_DAY = "messages_per_day"
    EXECUTIONS_PER_DAY = "executions_per_day"
    STORAGE_MB = "storage_mb"
    MEMORY_MB = "memory_mb"


class SortCounter(StrEnum):
    REQUESTS = "requests"
    MESSAGES_SENT = "messages_sent"
    TOOL_CALLS = "tool_calls"
    EXECUTIONS_STARTED = "executions_started"
    ERRORS = "errors"


FromDay = Annotated[IsoDay | None, Field(description="The first day (UTC, YYYY-MM-DD); default: `to_day`.")]
ToDay = Annotated[IsoDay | None, Field(description="The last day (UTC, YYYY-MM-DD), at most today; default: today. "
                                                 f"At most {MAX_RANGE_DAYS} days from `from_day`.")]


class UsageParams(Model):
    from_day: FromDay = None
    to_day: ToDay = None


class DayUsage(Model):
    day: date
    requests: dict[str, int] = Field(description="Operations called, by rate class (read, write, upload, auth, "
                                                 "recovery).")
    messages_sent: int
    tool_calls: int = Field(description="MCP tools called over /mcp.")
    executions_started: int = Field(description="Workflow runs started.")
    errors: dict[str, int] = Field(description="Calls that failed, by error code.")


class Stored(Model):
    items: int
    bytes: int


class LimitUse(Model):
    limit: int | None = Field(description="null: no limit.")
    used: int
    percent: float | None = Field(description="`used` as a percent of `limit`; null without a limit.")
    resets_at: datetime | None = Field(description="When a daily limit starts again (the next UTC midnight).")


class Usage(Model):
    agent_id: str
    from_day: date
    to_day: date
    days: list[DayUsage] = Field(description="Every day of the range, oldest first.")
    total: DayUsage = Field(description="The whole range added up (its `day` is `to_day`).")
    storage: dict[str, Stored] = Field(description="What the agent keeps now, by kind: messages, memories, files, "
                                                   "documents.")
    limits: dict[LimitName, LimitUse] = Field(description="Each limit: today's use for daily ones, what is kept "
                                                          "for storage_mb (files and documents) and memory_mb.")


class AdminUsageParams(Model):
    from_day: FromDay = None
    to_day: ToDay = None
    sort: SortCounter = Field(SortCounter.REQUESTS, description="Largest first by this counter over the range.")
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class AgentUsage(Model):
    agent_id: str
    handle: str | None = Field(description="null when the agent no longer exists.")
    total: DayUsage


class AdminUsagePage(Model):
    from_day: date
    to_day: date
    items: list[AgentUsage] = Field(description="Agents with any usage in the range.")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


AgentRef = Annotated[str, Field(min_length=1, max_length=64, description="Handle or agent id.")]
DailyLimit = Annotated[int, Field(ge=0, le=10**9, description="Per UTC day; 0: no limit.")]
SizeLimit = Annotated[int, Field(ge=1, le=10**7, description="MiB.")]


class SetLimitsParams(Model):
    agent: AgentRef
    messages_per_day: DailyLimit | None = None
    executions_per_day: DailyLimit | None = None
    storage_mb: SizeLimit | None = Field(None, description="MiB the agent's files and documents may hold.")
    memory_mb: SizeLimit | None = Field(None, description="MiB the agent's memories may hold.")


class ClearLimitsParams(Model):
    agent: AgentRef
    names: list[LimitName] | None = Field(None, max_length=len(LimitName),
                                          description="The overrides to drop; default: all of them.")


class AgentLimits(Model):
    agent_id: str
    overrides: dict[LimitName, int] = Field(description="What the operator set for this agent.")
    effective: dict[LimitName, int | None] = Field(description="What applies: the override, else the default; "
                                                               "null: no limit.")


class AnalyticsParams(Model):
    from_day: FromDay = None
    to_day: ToDay = None


class DayAnalytics(Model):
    day: date
    active_agents: int = Field(description="Agents that called any operation.")
    requests: int
    messages_sent: int
    tool_calls: int
    executions_started: int
    errors: dict[str, int] = Field(description="Failed calls by error code, anonymous callers' too.")


class Analytics(Model):
    from_day: date
    to_day: date
    days: list[DayAnalytics] = Field(description="Every day of the range, oldest first.")
