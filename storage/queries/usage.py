"""What each agent keeps on the hub, by kind, and what it does each day: the measures of its quotas.

Storage is kept as running totals, changed in the same transaction as what they count (messages: by
the usage flush), so checking a quota is one row read, never a sum over everything the agent wrote.
Daily counters are added to by each node's flush, so they are exact once every node has flushed.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from storage.schema import agent_limits, agent_storage, agents, usage_daily

from ._prepared import Prepared, PreparedUpsert

MESSAGES = "messages"
MEMORIES = "memories"
FILES = "files"
DOCUMENTS = "documents"


def storage_used(conn: Connection, agent_id: str, kind: str) -> tuple[int, int]:
    """(items, bytes) of `kind` the agent keeps."""
    row = _storage_used.first(conn, {"agent_id": agent_id, "kind": kind})
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)


def storage_of(conn: Connection, agent_id: str) -> dict[str, tuple[int, int]]:
    """(items, bytes) the agent keeps, by kind (kinds it never kept are missing)."""
    rows = conn.execute(select(agent_storage.c.kind, agent_storage.c.item_count, agent_storage.c.bytes)
                        .where(agent_storage.c.agent_id == agent_id))
    return {kind: (int(items), int(size)) for kind, items, size in rows}


def add_storage(conn: Connection, agent_id: str, kind: str, items: int, size: int) -> None:
    """Add `items` and `size` bytes (either may be negative) to what the agent keeps of `kind`."""
    _add_storage.on(conn).execute(conn, {"agent_id": agent_id, "kind": kind, "items": items, "size": size}).close()


def _build_add_storage(dialect_insert: Any) -> Any:
    items = bindparam("items", type_=agent_storage.c.item_count.type)
    size = bindparam("size", type_=agent_storage.c.bytes.type)
    statement = dialect_insert(agent_storage).values(agent_id=bindparam("agent_id"), kind=bindparam("kind"),
                                                     item_count=items, bytes=size)
    return statement.on_conflict_do_update(
        index_elements=[agent_storage.c.agent_id, agent_storage.c.kind],
        set_={"item_count": agent_storage.c.item_count + items, "bytes": agent_storage.c.bytes + size},
    )


# Prepared: they run for every file uploaded, document added and memory written (see storage/queries/_prepared.py).
_storage_used = Prepared(select(agent_storage.c.item_count, agent_storage.c.bytes)
                         .where(agent_storage.c.agent_id == bindparam("agent_id"),
                                agent_storage.c.kind == bindparam("kind")))
_add_storage = PreparedUpsert(_build_add_storage)


def add_usage(conn: Connection, deltas: Mapping[tuple[str, str, str], int]) -> dict[tuple[str, str, str], int]:
    """Add each `(agent_id, day, counter): delta`; return the totals they reach (with other nodes' flushes)."""
    upsert = _add_usage.on(conn)
    return {(agent_id, day, counter): int(upsert.scalar(conn, {"agent_id": agent_id, "day": day, "counter": counter,
                                                               "delta": delta}))
            for (agent_id, day, counter), delta in deltas.items()}


def _build_add_usage(dialect_insert: Any) -> Any:
    delta = bindparam("delta", type_=usage_daily.c.value.type)
    statement = dialect_insert(usage_daily).values(agent_id=bindparam("agent_id"), day=bindparam("day"),
                                                   counter=bindparam("counter"), value=delta)
    return statement.on_conflict_do_update(
        index_elements=[usage_daily.c.agent_id, usage_daily.c.day, usage_daily.c.counter],
        set_={"value": usage_daily.c.value + delta},
    ).returning(usage_daily.c.value)


_add_usage = PreparedUpsert(_build_add_usage)


def counter_value(conn: Connection, agent_id: str, day: str, counter: str) -> int:
    value = conn.execute(select(usage_daily.c.value).where(
        usage_daily.c.agent_id == agent_id, usage_daily.c.day == day, usage_daily.c.counter == counter)).scalar()
    return int(value or 0)


def usage_of(conn: Connection, agent_ids: Iterable[str], first: str, last: str) -> list[tuple[str, str, str, int]]:
    """(agent_id, day, counter, value) of the agents from day `first` to `last`."""
    rows = conn.execute(
        select(usage_daily.c.agent_id, usage_daily.c.day, usage_daily.c.counter, usage_daily.c.value)
        .where(usage_daily.c.agent_id.in_(list(agent_ids)), usage_daily.c.day >= first, usage_daily.c.day <= last)
    )
    return [(agent_id, day, counter, int(value)) for agent_id, day, counter, value in rows]


def agents_by_usage(conn: Connection, first: str, last: str, counters: list[str], offset: int, limit: int
                    ) -> list[tuple[str, int]]:
    """(agent_id, sum of `counters` from `first` to `last`) of the agents with any usage in those days, the
    largest sums first (then by id), `limit` of them from `offset`."""
    total = func.sum(usage_daily.c.value).filter(usage_daily.c.counter.in_(counters))
    ranked = func.coalesce(total, 0)
    rows = conn.execute(
        select(usage_daily.c.agent_id, ranked)
        .where(usage_daily.c.day >= first, usage_daily.c.day <= last, usage_daily.c.agent_id != "")
        .group_by(usage_daily.c.agent_id)
        .order_by(ranked.desc(), usage_daily.c.agent_id)
        .offset(offset).limit(limit)
    )
    return [(agent_id, int(value)) for agent_id, value in rows]


def totals_by_day(conn: Connection, first: str, last: str) -> list[tuple[str, str, int]]:
    """(day, counter, sum over every agent) from `first` to `last`."""
    rows = conn.execute(
        select(usage_daily.c.day, usage_daily.c.counter, func.sum(usage_daily.c.value))
        .where(usage_daily.c.day >= first, usage_daily.c.day <= last)
        .group_by(usage_daily.c.day, usage_daily.c.counter)
    )
    return [(day, counter, int(value)) for day, counter, value in rows]


def active_by_day(conn: Connection, first: str, last: str, counters: list[str]) -> dict[str, int]:
    """Agents with any of `counters` counted, per day from `first` to `last`."""
    rows = conn.execute(
        select(usage_daily.c.day, func.count(usage_daily.c.agent_id.distinct()))
        .where(usage_daily.c.day >= first, usage_daily.c.day <= last, usage_daily.c.counter.in_(counters),
               usage_daily.c.agent_id != "")
        .group_by(usage_daily.c.day)
    )
    return {day: int(count) for day, count in rows}


def limits_of(conn: Connection, agent_id: str) -> dict[str, int]:
    """The operator's overrides of the agent's limits, by name (empty: the defaults apply)."""
    row = _limits_of.mapping(conn, {"agent_id": agent_id})
    return dict(row["limits"] or {}) if row is not None else {}


_limits_of = Prepared(select(agent_limits.c.limits).where(agent_limits.c.agent_id == bindparam("agent_id")))


def put_limits(conn: Connection, agent_id: str, limits: Mapping[str, int], now: datetime) -> None:
    """Replace the agent's overrides (none: delete the row)."""
    conn.execute(agent_limits.delete().where(agent_limits.c.agent_id == agent_id))
    if limits:
        conn.execute(agent_limits.insert().values(agent_id=agent_id, limits=dict(limits), updated_at=now))


def handles(conn: Connection, agent_ids: list[str]) -> dict[str, str]:
    """The handles of those of the agents that exist."""
    return dict(conn.execute(select(agents.c.id, agents.c.handle).where(agents.c.id.in_(agent_ids))).all())
