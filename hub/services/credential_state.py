"""What makes a stateless token stop working at once: per-agent credential epochs and ended sessions.

Every access token carries the agent's credential epoch at minting and its session id. Revoking,
recovering or suspending bumps the epoch in the store; logging out or revoking a key ends sessions.
This cache answers "is this token still good?" without a query per request; the services that
change either call `forget` / `end_sessions` after their write commits. With several nodes,
`hub.cluster` sets `tell_peers` so the other nodes drop the same entries (`apply`), and calls
`reload` when it may have missed such news.

`generation` counts those changes, so a long-lived connection can tell cheaply that nothing that
could end its credential has happened since it last authenticated (`IdentityService.still_valid`).
"""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Connection

from storage.queries import agents as agent_queries
from storage.queries import credentials as credential_queries
from storage.store import Store

from ..clock import Clock

MAX_CACHED_AGENTS: Final = 100_000


@dataclass(frozen=True, slots=True)
class AgentCredentialState:
    epoch: int
    suspended: bool
    is_admin: bool
    handle: str


class CredentialState:
    def __init__(self, store: Store, clock: Clock, access_token_ttl: int) -> None:
        self._store = store
        self._clock = clock
        self._ttl = timedelta(seconds=access_token_ttl)
        self._agents: OrderedDict[str, AgentCredentialState] = OrderedDict()
        self._ended_sessions: dict[str, datetime] = {}
        self.generation = 0
        """Bumped by every change taken (`apply`, `reload`): a read or a check that began before a bump may
        predate it."""
        self.tell_peers: Callable[[Sequence[str], Sequence[str]], None] | None = None
        """Tells the other nodes (agent ids, ended session ids); None on a single node."""

    async def load(self) -> None:
        """Remember the sessions ended recently enough that their access tokens could still be alive."""
        since = self._clock.now() - self._ttl
        families = await self._store.read(lambda conn: credential_queries.families_revoked_since(conn, since))
        self.apply([], families)

    async def agent(self, agent_id: str) -> AgentCredentialState | None:
        state = self._agents.get(agent_id)
        if state is None:
            generation = self.generation
            state = await self._store.read(lambda conn: _read_state(conn, agent_id))
            if state is None or generation != self.generation:
                return state  # a change committed meanwhile: this read may predate it
            self._agents[agent_id] = state
            if len(self._agents) > MAX_CACHED_AGENTS:
                self._agents.popitem(last=False)
        return state

    async def reload(self) -> None:
        """Drop every cached agent and re-read the ended sessions: news from other nodes may be lost."""
        self.generation += 1
        self._agents.clear()
        await self.load()

    def forget(self, agent_id: str) -> None:
        self.apply([agent_id], [])
        if self.tell_peers is not None:
            self.tell_peers([agent_id], [])

    def end_sessions(self, session_ids: list[str]) -> None:
        self.apply([], session_ids)
        if self.tell_peers is not None and session_ids:
            self.tell_peers([], session_ids)

    def apply(self, agent_ids: Sequence[str], session_ids: Sequence[str]) -> None:
        """Take a change made here or on another node: forget the agents, remember the ended sessions."""
        self.generation += 1
        for agent_id in agent_ids:
            self._agents.pop(agent_id, None)
        now = self._clock.now()
        until = now + self._ttl
        for session_id in session_ids:
            self._ended_sessions[session_id] = until
        for session_id in [s for s, expiry in self._ended_sessions.items() if expiry < now]:
            del self._ended_sessions[session_id]

    def session_ended(self, session_id: str) -> bool:
        return session_id in self._ended_sessions


def _read_state(conn: Connection, agent_id: str) -> AgentCredentialState | None:
    row = agent_queries.get_agent(conn, agent_id)
    if row is None:
        return None
    return AgentCredentialState(
        epoch=row["credential_epoch"],
        suspended=row["suspended_at"] is not None,
        is_admin=row["is_admin"],
        handle=row["handle"],
    )
