"""API keys, refresh tokens and invites. Only keyed hashes of their secrets are ever stored."""

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, or_, select, update

from storage.schema import api_keys, invites, refresh_tokens


def insert_api_key(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(api_keys.insert().values(**row))


def get_api_key(conn: Connection, key_id: str) -> RowMapping | None:
    return conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()


def list_api_keys(conn: Connection, agent_id: str) -> list[RowMapping]:
    return list(
        conn.execute(select(api_keys).where(api_keys.c.agent_id == agent_id).order_by(api_keys.c.id)).mappings()
    )


def count_live_api_keys(conn: Connection, agent_id: str) -> int:
    return conn.execute(
        select(func.count()).where(api_keys.c.agent_id == agent_id, api_keys.c.revoked_at.is_(None))
    ).scalar_one()


def revoke_api_key(conn: Connection, key_id: str, now: datetime) -> None:
    conn.execute(
        update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )


def revoke_all_api_keys(conn: Connection, agent_id: str, now: datetime) -> None:
    conn.execute(
        update(api_keys).where(api_keys.c.agent_id == agent_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )


def touch_api_key(conn: Connection, key_id: str, now: datetime) -> None:
    """Record a use at `now`; never moves `last_used_at` back (another node may have written a later use)."""
    conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now))
        .values(last_used_at=now)
    )


def insert_refresh_token(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(refresh_tokens.insert().values(**row))


def get_refresh_token(conn: Connection, token_id: str) -> RowMapping | None:
    return conn.execute(select(refresh_tokens).where(refresh_tokens.c.id == token_id)).mappings().first()


def mark_refresh_token_used(conn: Connection, token_id: str, now: datetime) -> bool:
    """Claim the token for one rotation; False when it was already used (a replay)."""
    result = conn.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.id == token_id, refresh_tokens.c.used_at.is_(None))
        .values(used_at=now)
    )
    return result.rowcount == 1


def revoke_families(conn: Connection, now: datetime, **where: str) -> list[str]:
    """Revoke every live refresh token matching `where` (family_id, agent_id or api_key_id);
    return the families that had a live token."""
    conditions = [refresh_tokens.c[column] == value for column, value in where.items()]
    families = conn.execute(
        select(refresh_tokens.c.family_id).distinct().where(*conditions, refresh_tokens.c.revoked_at.is_(None))
    ).scalars().all()
    conn.execute(
        update(refresh_tokens).where(*conditions, refresh_tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return list(families)


def families_revoked_since(conn: Connection, since: datetime) -> list[str]:
    return list(
        conn.execute(
            select(refresh_tokens.c.family_id).distinct().where(refresh_tokens.c.revoked_at >= since)
        ).scalars()
    )


def insert_invite(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(invites.insert().values(**row))


def get_invite(conn: Connection, invite_id: str) -> RowMapping | None:
    return conn.execute(select(invites).where(invites.c.id == invite_id)).mappings().first()


def use_invite(conn: Connection, invite_id: str, now: datetime) -> bool:
    """Spend one use of a live invite; False when none is left or it expired."""
    result = conn.execute(
        update(invites)
        .where(invites.c.id == invite_id, invites.c.uses_left > 0, invites.c.expires_at > now)
        .values(uses_left=invites.c.uses_left - 1)
    )
    return result.rowcount == 1
