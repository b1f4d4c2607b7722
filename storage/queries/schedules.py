"""Schedules of workflows and their fire records (one per schedule and fire time)."""

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.schema import agents, schedule_fires, schedules, workflows

_LIVE = select(workflows.c.id).where(workflows.c.deleted_at.is_(None))
"""A deleted workflow's schedules are gone with it: hidden and never fired."""


def insert_schedule(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(schedules).values(**row))


def get_schedule(conn: Connection, schedule_id: str) -> RowMapping | None:
    return conn.execute(select(schedules).where(schedules.c.id == schedule_id,
                                                schedules.c.workflow_id.in_(_LIVE))).mappings().first()


def schedules_of(conn: Connection, owner_id: str, *, workflow_id: str | None, before_id: str | None,
                 limit: int) -> list[RowMapping]:
    """An owner's schedules, newest first."""
    query = select(schedules).where(schedules.c.owner_id == owner_id, schedules.c.workflow_id.in_(_LIVE))
    if workflow_id is not None:
        query = query.where(schedules.c.workflow_id == workflow_id)
    if before_id is not None:
        query = query.where(schedules.c.id < before_id)
    return list(conn.execute(query.order_by(schedules.c.id.desc()).limit(limit)).mappings())


def count_of(conn: Connection, owner_id: str) -> int:
    return conn.execute(select(func.count()).select_from(schedules).where(
        schedules.c.owner_id == owner_id, schedules.c.workflow_id.in_(_LIVE))).scalar_one()


def update_schedule(conn: Connection, schedule_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(schedules).where(schedules.c.id == schedule_id).values(**values))


def delete_schedule(conn: Connection, schedule_id: str) -> None:
    conn.execute(delete(schedules).where(schedules.c.id == schedule_id))


def _firing() -> Select[Any]:
    """Schedules that fire: enabled, of a live workflow, and of an owner not suspended (whose missed times
    come due once reinstated)."""
    return select(schedules).join(agents, agents.c.id == schedules.c.owner_id).where(
        schedules.c.next_fire_at.is_not(None), schedules.c.workflow_id.in_(_LIVE), agents.c.suspended_at.is_(None))


def _due(now: datetime, limit: int) -> Select[Any]:
    return _firing().where(schedules.c.next_fire_at <= now).order_by(schedules.c.next_fire_at).limit(limit)


def due(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    """Schedules whose next fire time has come, the longest due first."""
    return list(conn.execute(_due(now, limit)).mappings())


def claim_due(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    """`due`, locked for this transaction (on PostgreSQL without waiting: nodes firing at once take different
    schedules)."""
    query = _due(now, limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=schedules)
    return list(conn.execute(query).mappings())


def next_due(conn: Connection) -> datetime | None:
    return conn.execute(select(func.min(_firing().subquery().c.next_fire_at))).scalar_one()


def advance(conn: Connection, schedule_id: str, expected: datetime, values: dict[str, Any]) -> bool:
    """Move a schedule past its fire time `expected`, if it is still there; whether it was (a node that
    finds it moved lost the fire to another, or the schedule was changed meanwhile)."""
    return conn.execute(update(schedules).where(schedules.c.id == schedule_id,
                                                schedules.c.next_fire_at == expected).values(**values)).rowcount == 1


def record_fire(conn: Connection, schedule_id: str, fire_time: datetime, fired_at: datetime) -> bool:
    """The fire record of (`schedule_id`, `fire_time`); False if one exists: that fire is someone else's."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(schedule_fires).values(schedule_id=schedule_id, fire_time=fire_time,
                                                      fired_at=fired_at)
    inserted = statement.on_conflict_do_nothing().returning(schedule_fires.c.schedule_id)
    return conn.execute(inserted).first() is not None


def set_fire_execution(conn: Connection, schedule_id: str, fire_time: datetime, execution_id: str) -> None:
    conn.execute(update(schedule_fires).where(schedule_fires.c.schedule_id == schedule_id,
                                              schedule_fires.c.fire_time == fire_time)
                 .values(execution_id=execution_id))


def fires_of(conn: Connection, schedule_id: str) -> list[RowMapping]:
    """A schedule's fire records, oldest first."""
    return list(conn.execute(select(schedule_fires).where(schedule_fires.c.schedule_id == schedule_id)
                             .order_by(schedule_fires.c.fire_time)).mappings())


def prune_fires(conn: Connection, schedule_id: str, before: datetime) -> None:
    conn.execute(delete(schedule_fires).where(schedule_fires.c.schedule_id == schedule_id,
                                              schedule_fires.c.fire_time < before))
