"""Agent profiles: lookup, discovery and self-service edits; the operator's view and suspension."""

import base64
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.admin import AdminAgentView, ListAgentsParams
from protocol.agents import HANDLE_PATTERN, Profile, SearchAgentsParams, UpdateProfileParams, Visibility
from protocol.common import Page
from protocol.errors import Conflict, InvalidRequest, NotFound
from storage.queries import agents as agent_queries
from storage.queries import credentials as credential_queries
from storage.store import Store

from ..clock import Clock
from .credential_state import CredentialState


def profile_of(row: RowMapping, tags: list[str]) -> Profile:
    return Profile(
        agent_id=row["id"],
        handle=row["handle"],
        display_name=row["display_name"],
        description=row["description"],
        tags=tags,
        visibility=Visibility(row["visibility"]),
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def find_agent(conn: Connection, ref: str) -> RowMapping | None:
    """An agent by id or handle."""
    if ids.is_id(ids.AGENT, ref):
        return agent_queries.get_agent(conn, ref)
    return agent_queries.get_agent_by_handle(conn, ref.strip().lower())


def load_profile(conn: Connection, ref: str) -> Profile | None:
    row = find_agent(conn, ref)
    return profile_of(row, agent_queries.tags_of(conn, [row["id"]])[row["id"]]) if row else None


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, well_formed: Callable[[str], bool]) -> str | None:
    """The position a cursor holds; refused unless it is strict base64url of a well-formed position."""
    if cursor is None:
        return None
    try:
        value = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        value = None
    if value is None or not well_formed(value):
        raise InvalidRequest("the cursor is not one this hub issued", {"field": "cursor"})
    return value


def _is_handle(value: str) -> bool:
    return re.fullmatch(HANDLE_PATTERN, value) is not None


def _is_agent_id(value: str) -> bool:
    return ids.is_id(ids.AGENT, value)


def _page(conn: Connection, rows: list[RowMapping], limit: int, key: str) -> tuple[list[Profile], str | None]:
    rows = rows[:limit + 1]
    more = len(rows) > limit
    rows = rows[:limit]
    tags = agent_queries.tags_of(conn, [row["id"] for row in rows])
    return [profile_of(row, tags[row["id"]]) for row in rows], (_encode_cursor(rows[-1][key]) if more else None)


class AgentService:
    def __init__(self, store: Store, clock: Clock, state: CredentialState) -> None:
        self._store = store
        self._clock = clock
        self._state = state

    async def get(self, ref: str) -> Profile:
        profile = await self._store.read(lambda conn: load_profile(conn, ref), bounded=True)
        if profile is None:
            raise NotFound(f"no agent {ref!r}")
        return profile

    async def search(self, params: SearchAgentsParams) -> Page[Profile]:
        after = _decode_cursor(params.cursor, _is_handle)

        def query(conn: Connection) -> tuple[list[Profile], str | None]:
            rows = agent_queries.search_public(
                conn, text=params.q, tag=params.tag, after_handle=after, limit=params.limit + 1
            )
            return _page(conn, rows, params.limit, "handle")

        items, next_cursor = await self._store.read(query)
        return Page[Profile](items=items, next_cursor=next_cursor)

    async def update_profile(self, agent_id: str, params: UpdateProfileParams) -> Profile:
        changes: dict[str, Any] = {field: getattr(params, field) for field in params.model_fields_set - {"tags"}}
        for required in ("handle", "visibility"):
            if required in changes and changes[required] is None:
                raise InvalidRequest(f"{required} cannot be null", {"field": required})
        if "metadata" in changes and changes["metadata"] is None:
            changes["metadata"] = {}
        changes["updated_at"] = self._clock.now()

        def write(conn: Connection) -> Profile:
            agent_queries.update_agent(conn, agent_id, changes)
            if "tags" in params.model_fields_set:
                agent_queries.replace_tags(conn, agent_id, list(dict.fromkeys(params.tags or [])))
            profile = load_profile(conn, agent_id)
            assert profile is not None
            return profile

        try:
            profile = await self._store.write(write)
        except IntegrityError:
            raise Conflict(f"the handle {params.handle!r} is taken", {"field": "handle"}) from None
        self._state.forget(agent_id)
        return profile

    async def admin_list(self, params: ListAgentsParams) -> Page[AdminAgentView]:
        after = _decode_cursor(params.cursor, _is_agent_id)

        def query(conn: Connection) -> Page[AdminAgentView]:
            rows = agent_queries.list_all(conn, suspended=params.suspended, after_id=after, limit=params.limit + 1)
            profiles, next_cursor = _page(conn, rows, params.limit, "id")
            views = [_admin_view(row, profile) for row, profile in zip(rows, profiles)]
            return Page[AdminAgentView](items=views, next_cursor=next_cursor)

        return await self._store.read(query, bounded=True)

    async def set_suspended(self, actor_id: str, ref: str, suspended: bool, reason: str | None) -> AdminAgentView:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[AdminAgentView, list[str]]:
            row = find_agent(conn, ref)
            if row is None:
                raise NotFound(f"no agent {ref!r}")
            if row["id"] == actor_id:
                raise InvalidRequest("an admin cannot suspend or unsuspend itself", {"field": "agent"})
            ended: list[str] = []
            if suspended:
                # A new epoch voids every access token minted before the suspension, at once; ending
                # every session voids the refresh tokens too, so none works again after unsuspending.
                agent_queries.bump_credential_epoch(conn, row["id"], {"suspended_at": now, "suspended_reason": reason})
                ended = credential_queries.revoke_families(conn, now, agent_id=row["id"])
            else:
                agent_queries.update_agent(conn, row["id"], {"suspended_at": None, "suspended_reason": None})
            fresh = agent_queries.get_agent(conn, row["id"])
            assert fresh is not None
            return _admin_view(fresh, profile_of(fresh, agent_queries.tags_of(conn, [row["id"]])[row["id"]])), ended

        view, ended = await self._store.write(write)
        self._state.forget(view.profile.agent_id)
        self._state.end_sessions(ended)
        return view


def _admin_view(row: RowMapping, profile: Profile) -> AdminAgentView:
    suspended_at: datetime | None = row["suspended_at"]
    return AdminAgentView(
        profile=profile, is_admin=row["is_admin"], suspended_at=suspended_at, suspended_reason=row["suspended_reason"]
    )
