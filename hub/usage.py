"""Usage counting: in memory on the write path, added to the store in batches.

`count` is a dictionary increment; the flusher (a task of the hub) adds what was counted to
`usage_daily` every `usage_flush_seconds`, and once more when the hub stops. The store's totals are
exact once every node has flushed. A daily quota is checked against what this node knows: the
store's total (read at most once per flush interval) plus what it counted since, so across nodes
it can overshoot by what the others counted since their last flush.
"""

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Self

import anyio
from anyio.abc import TaskStatus
from sqlalchemy import Connection

from protocol.errors import QuotaExceeded
from protocol.usage import LimitName
from storage.queries import usage as usage_queries
from storage.store import Store, StoreClosed

from .clock import Clock
from .config import Settings

log = logging.getLogger(__name__)

MESSAGES_SENT: Final = "messages_sent"
TOOL_CALLS: Final = "tool_calls"
EXECUTIONS_STARTED: Final = "executions_started"
REQUESTS: Final = "requests."
ERRORS: Final = "errors."
NO_AGENT: Final = ""
"""Whom an anonymous caller's errors are counted for."""

DAILY_COUNTERS: Final = {LimitName.MESSAGES_PER_DAY: MESSAGES_SENT, LimitName.EXECUTIONS_PER_DAY: EXECUTIONS_STARTED}

MIB: Final = 2**20

Key = tuple[str, str, str]
"""(agent_id, day, counter)."""


def storage_quota(conn: Connection, settings: Settings, agent_id: str) -> int:
    """Bytes the agent's files and documents may hold."""
    mib = usage_queries.limits_of(conn, agent_id).get(LimitName.STORAGE_MB)
    return settings.storage_quota_bytes if mib is None else mib * MIB


def memory_quota(conn: Connection, settings: Settings, agent_id: str) -> int:
    """Bytes the agent's memories may hold."""
    mib = usage_queries.limits_of(conn, agent_id).get(LimitName.MEMORY_MB)
    return settings.memory_quota_bytes if mib is None else mib * MIB


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def next_midnight(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def default_limits(settings: Settings) -> dict[LimitName, int | None]:
    """The operator's defaults; None: no limit."""
    return {
        LimitName.MESSAGES_PER_DAY: settings.messages_per_day or None,
        LimitName.EXECUTIONS_PER_DAY: settings.executions_per_day or None,
        LimitName.STORAGE_MB: -(-settings.storage_quota_bytes // MIB),
        LimitName.MEMORY_MB: -(-settings.memory_quota_bytes // MIB),
    }


def effective_limits(settings: Settings, overrides: Mapping[str, int]) -> dict[LimitName, int | None]:
    """What applies to an agent: its override, else the default (a daily 0 means no limit)."""
    limits = default_limits(settings)
    for name, value in overrides.items():
        limits[LimitName(name)] = value or None
    return limits


class UsageMeter:
    """Counts per agent, day and counter; owned by the hub, which runs `run` and stops it with `close`."""

    def __init__(self, store: Store, clock: Clock, settings: Settings) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._pending: Counter[Key] = Counter()
        self._in_flight: Counter[Key] = Counter()
        self._stored: Counter[tuple[str, str]] = Counter()
        """Message bytes and items kept, by (agent_id, "items" | "bytes"), to add to `agent_storage`."""
        self._flushed: dict[Key, tuple[int, float]] = {}
        """The store's total of a daily-limit counter when last read or flushed, and when."""
        self._overrides: dict[str, tuple[dict[str, int], float]] = {}
        self._flush_lock = anyio.Lock()
        self._scope = anyio.CancelScope()

    def count(self, agent_id: str | None, counter: str, n: int = 1) -> None:
        """Count `n` of `counter` for the agent today; never waits."""
        self._pending[(agent_id or NO_AGENT, day_of(self._clock.now()), counter)] += n

    def kept_messages(self, agent_id: str, items: int, size: int) -> None:
        """Messages, and bytes of their bodies, the agent keeps more (or fewer, when negative)."""
        self._stored[(agent_id, "items")] += items
        self._stored[(agent_id, "bytes")] += size

    async def reserve(self, agent_id: str, name: LimitName) -> "Reservation":
        """Count one against the agent's daily limit `name` now, before the write it allows; over the limit,
        count nothing and keep the refusal for the write to raise (`Reservation.check`), after it has seen
        whether it only repeats an earlier one."""
        now = self._clock.now()
        key = (agent_id, day_of(now), DAILY_COUNTERS[name])
        flushed, overrides = self._flushed.get(key), self._overrides.get(agent_id)
        if flushed is None or overrides is None or self._stale(flushed[1]) or self._stale(overrides[1]):
            read_overrides, total = await self._store.read(lambda conn: (
                usage_queries.limits_of(conn, agent_id), usage_queries.counter_value(conn, *key)), bounded=True)
            if (meanwhile := self._flushed.get(key)) is not None:  # a flush during the read may be missing from it
                total = max(total, meanwhile[0])
            flushed = self._flushed[key] = (total, self._clock.monotonic())
            overrides = self._overrides[agent_id] = (read_overrides, self._clock.monotonic())
        limit = effective_limits(self._settings, overrides[0])[name]
        used = flushed[0] + self._in_flight[key] + self._pending[key]
        if limit is not None and used >= limit:
            resets_at = next_midnight(now.astimezone(UTC).date()).isoformat().replace("+00:00", "Z")
            return Reservation(self, key, QuotaExceeded(
                f"{name} is {limit} and {used} are used today; it resets at {resets_at}",
                quota=name.value, limit=limit, used=used, resets_at=resets_at))
        self._pending[key] += 1
        return Reservation(self, key)

    def release(self, key: Key) -> None:
        self._pending[key] -= 1

    def forget_limits(self, agent_id: str) -> None:
        """The agent's overrides changed: read them again at its next reservation."""
        self._overrides.pop(agent_id, None)

    def _stale(self, at: float) -> bool:
        return self._clock.monotonic() - at > self._settings.usage_flush_seconds

    async def flush(self) -> None:
        """Add what this node counted to the store; returns once it is committed (or failed, kept for later)."""
        async with self._flush_lock:
            if not self._pending and not self._stored:
                return
            batch, self._pending = self._pending, Counter()
            stored, self._stored = self._stored, Counter()
            self._in_flight = batch

            def write(conn: Connection) -> dict[Key, int]:
                for agent_id in {agent_id for agent_id, _ in stored}:
                    usage_queries.add_storage(conn, agent_id, usage_queries.MESSAGES, stored[(agent_id, "items")],
                                              stored[(agent_id, "bytes")])
                return usage_queries.add_usage(conn, {key: n for key, n in batch.items() if n})

            try:
                totals = await self._store.write(write)
            except BaseException:
                self._pending.update(batch)  # counted again at the next flush: nothing lost
                self._stored.update(stored)
                raise
            finally:
                self._in_flight = Counter()
            now = self._clock.monotonic()
            daily = set(DAILY_COUNTERS.values())
            self._flushed = {key: entry for key, entry in self._flushed.items() if not self._stale(entry[1])}
            self._flushed.update((key, (total, now)) for key, total in totals.items() if key[2] in daily)
            self._overrides = {agent: entry for agent, entry in self._overrides.items() if not self._stale(entry[1])}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush every `usage_flush_seconds` until `close`, then once more."""
        task_status.started()
        with self._scope:
            while True:
                await anyio.sleep(self._settings.usage_flush_seconds)
                try:
                    await self.flush()
                except StoreClosed:
                    break
                except Exception:  # the counts stay pending; the next flush tries again
                    log.exception("flushing usage counts failed")
        with anyio.CancelScope(shield=True):
            try:
                await self.flush()
            except StoreClosed:
                log.warning("the store closed before the last flush of usage counts")
            except Exception:
                log.exception("the last flush of usage counts failed")

    def close(self) -> None:
        self._scope.cancel()


@dataclass
class Reservation:
    """One counted against a daily limit, or the refusal to count it."""

    _meter: UsageMeter
    _key: Key
    refused: QuotaExceeded | None = None

    def check(self) -> None:
        """Raises QuotaExceeded when the limit was reached (a write calls it once it knows it makes something new)."""
        if self.refused is not None:
            raise self.refused

    def release(self) -> None:
        """The write it allowed made nothing new: count it no more."""
        if self.refused is None:
            self._meter.release(self._key)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:  # the write failed: it made nothing to count
            self.release()
