"""Webhook endpoints, the runs that report to them, their deliveries and each delivery's attempts."""

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, exists, func, insert, select, update

from storage.schema import deliveries, events, webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_runs

# -- endpoints --------------------------------------------------------------------------------------------


def insert_endpoint(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(webhook_endpoints).values(**row))


def get_endpoint(conn: Connection, endpoint_id: str) -> RowMapping | None:
    return conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)).mappings().first()


def endpoint_with_url(conn: Connection, owner_id: str, url: str) -> RowMapping | None:
    """The owner's oldest endpoint with exactly this URL."""
    return conn.execute(select(webhook_endpoints)
                        .where(webhook_endpoints.c.owner_id == owner_id, webhook_endpoints.c.url == url)
                        .order_by(webhook_endpoints.c.id).limit(1)).mappings().first()


def endpoints_of(conn: Connection, owner_id: str, *, before_id: str | None, limit: int) -> list[RowMapping]:
    """An owner's endpoints, newest first."""
    query = select(webhook_endpoints).where(webhook_endpoints.c.owner_id == owner_id)
    if before_id is not None:
        query = query.where(webhook_endpoints.c.id < before_id)
    return list(conn.execute(query.order_by(webhook_endpoints.c.id.desc()).limit(limit)).mappings())


def count_of(conn: Connection, owner_id: str) -> int:
    return int(conn.execute(select(func.count()).select_from(webhook_endpoints)
                            .where(webhook_endpoints.c.owner_id == owner_id)).scalar_one())


def update_endpoint(conn: Connection, endpoint_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**values))


def advance_cursor(conn: Connection, endpoint_id: str, seen: int, cursor: int) -> bool:
    """Move an endpoint's fan-out cursor from `seen` to `cursor`; False if another node moved it first."""
    return conn.execute(update(webhook_endpoints)
                        .where(webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.event_cursor == seen)
                        .values(event_cursor=cursor)).rowcount == 1


def delete_endpoint(conn: Connection, endpoint_id: str) -> None:
    conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))


def watching_owners(conn: Connection) -> set[str]:
    """The agents with an enabled endpoint."""
    return set(conn.execute(select(webhook_endpoints.c.owner_id).distinct()
                            .where(webhook_endpoints.c.enabled.is_(True))).scalars())


def behind(conn: Connection, owner_ids: Collection[str] | None = None) -> list[str]:
    """The enabled endpoints (of `owner_ids`, or anyone's) whose owner has events past their cursor."""
    news = exists().where(deliveries.c.agent_id == webhook_endpoints.c.owner_id,
                          deliveries.c.event_id > webhook_endpoints.c.event_cursor)
    query = select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled.is_(True), news)
    if owner_ids is not None:
        query = query.where(webhook_endpoints.c.owner_id.in_(owner_ids))
    return list(conn.execute(query).scalars())


# -- runs that report to an endpoint ------------------------------------------------------------------


def attach_run(conn: Connection, execution_id: str, endpoint_id: str) -> None:
    conn.execute(insert(webhook_runs).values(execution_id=execution_id, endpoint_id=endpoint_id))


def run_endpoint(conn: Connection, execution_id: str) -> str | None:
    """The endpoint a run reports to, if any."""
    return conn.execute(select(webhook_runs.c.endpoint_id)
                        .where(webhook_runs.c.execution_id == execution_id)).scalar()


def runs_reporting_to(conn: Connection, endpoint_id: str, execution_ids: Collection[str]) -> set[str]:
    """Those of `execution_ids` whose result goes to the endpoint."""
    if not execution_ids:
        return set()
    return set(conn.execute(select(webhook_runs.c.execution_id)
                            .where(webhook_runs.c.endpoint_id == endpoint_id,
                                   webhook_runs.c.execution_id.in_(execution_ids))).scalars())


# -- deliveries and attempts ----------------------------------------------------------------------------


def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(webhook_deliveries), rows)


def events_at(conn: Connection, cursors: Collection[int]) -> dict[int, RowMapping]:
    """The events (`id`, `payload`) with those cursors, by cursor."""
    if not cursors:
        return {}
    rows = conn.execute(select(events.c.id, events.c.payload).where(events.c.id.in_(cursors))).mappings()
    return {row["id"]: row for row in rows}


def get_delivery(conn: Connection, delivery_id: str) -> RowMapping | None:
    return conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).mappings().first()


def update_delivery(conn: Connection, delivery_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values))


def deliveries_of(conn: Connection, endpoint_id: str, *, status: str | None, before_id: str | None,
                  limit: int) -> list[RowMapping]:
    """An endpoint's deliveries, newest first."""
    query = select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(webhook_deliveries.c.status == status)
    if before_id is not None:
        query = query.where(webhook_deliveries.c.id < before_id)
    return list(conn.execute(query.order_by(webhook_deliveries.c.id.desc()).limit(limit)).mappings())


def with_status(conn: Connection, endpoint_id: str, status: str) -> list[str]:
    return list(conn.execute(select(webhook_deliveries.c.id).where(
        webhook_deliveries.c.endpoint_id == endpoint_id, webhook_deliveries.c.status == status)).scalars())


def insert_attempt(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(webhook_attempts).values(**row))


def attempts_of(conn: Connection, delivery_ids: Collection[str]) -> list[RowMapping]:
    """The attempts of those deliveries, oldest first."""
    if not delivery_ids:
        return []
    return list(conn.execute(select(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(delivery_ids))
                             .order_by(webhook_attempts.c.id)).mappings())
