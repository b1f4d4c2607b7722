"""What makes a stateless token stop working at once: per-agent credential epochs and ended sessions.

Every access token carries the agent's credential epoch at minting and its session id. Revoking,
recovering or suspending bumps the epoch in the store; logging out or revoking a key ends sessions.
This cache answers "is this token still good?" without a query per request; the services that
change either call `forget` / `end_sessions` after their write commits. With several nodes,
`hub.cluster` sets `tell_peers` so the other nodes drop the same entries (`apply`), and calls
`reload` when it may have missed such news.

`generation` counts those changes, so a long-lived connection can tell cheaply that nothing that
could end its credential has happened since it last authenticated (`IdentityService.still_valid`).

It also keeps the live API keys it has read (`api_key`), by key id and with only the stored keyed
hash of the secret, never the key. Every change that can end a key (revocation, recovery,
suspension) forgets the key's agent, and forgetting an agent drops its keys too, here and, through
the same notice, on the other nodes; `reload` drops them all.
"""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Connection

from protocol.identity import Scope
from storage.queries import agents as agent_queries
from storage.queries import credentials as credential_queries
from storage.store import Store

from ..clock import Clock

MAX_CACHED_AGENTS: Final = 100_000
MAX_CACHED_API_KEYS: Final = 100_000


@dataclass(frozen=True, slots=True)
class AgentCredentialState:
    epoch: int
    suspended: bool
    is_admin: bool
    handle: str


@dataclass(slots=True)
class ApiKeyState:
    """An API key as the store has it: its lookup id and the keyed hash of its secret, never the key."""

    key_id: str
    agent_id: str
    secret_hash: str
    scopes: frozenset[Scope]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    """As last written by this node, or read: a use updates the store once the value is older than the
    resolution (`identity.LAST_USED_RESOLUTION`)."""


class CredentialState:
    def __init__(self, store: Store, clock: Clock, access_token_ttl: int) -> None:
        self._store = store
        self._clock = clock
        self._ttl = timedelta(seconds=access_token_ttl)
        self._agents: OrderedDict[str, AgentCredentialState] = OrderedDict()
        self._ended_sessions: dict[str, datetime] = {}
        self._api_keys: OrderedDict[str, ApiKeyState] = OrderedDict()
        """Live keys only (not revoked when read), by key id; expiry is checked on each use."""
        self._api_keys_of: dict[str, set[str]] = {}
        """agent id → the ids of its keys in `_api_keys`, so forgetting an agent drops its keys."""
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
            state = await self._store.read(lambda conn: _read_state(conn, agent_id), bounded=True)
            if state is None or generation != self.generation:
                return state  # a change committed meanwhile: this read may predate it
            self._agents[agent_id] = state
            if len(self._agents) > MAX_CACHED_AGENTS:
                self._agents.popitem(last=False)
        return state

    async def api_key(self, key_id: str) -> ApiKeyState | None:
        """The stored key `key_id` (None: unknown), from the cache when it holds it: the caller still
        compares the secret's hash, and checks revocation and expiry."""
        state = self._api_keys.get(key_id)
        if state is not None:
            return state
        generation = self.generation
        row = await self._store.read(lambda conn: credential_queries.get_api_key(conn, key_id), bounded=True)
        if row is None:
            return None
        state = ApiKeyState(
            key_id=row["id"], agent_id=row["agent_id"], secret_hash=row["secret_hash"],
            scopes=frozenset(Scope(s) for s in row["scopes"]), expires_at=row["expires_at"],
            revoked_at=row["revoked_at"], last_used_at=row["last_used_at"],
        )
        if state.revoked_at is not None or generation != self.generation:
            return state  # revoked: nothing to save; a change committed meanwhile: this read may predate it
        self._api_keys[key_id] = state
        self._api_keys_of.setdefault(state.agent_id, set()).add(key_id)
        if len(self._api_keys) > MAX_CACHED_API_KEYS:
            _, oldest = self._api_keys.popitem(last=False)
            self._drop_index(oldest)
        return state

    def _drop_index(self, state: ApiKeyState) -> None:
        keys = self._api_keys_of.get(state.agent_id)
        if keys is not None:
            keys.discard(state.key_id)
            if not keys:
                del self._api_keys_of[state.agent_id]

    async def reload(self) -> None:
        """Drop every cached agent and key and re-read the ended sessions: news from other nodes may be lost."""
        self.generation += 1
        self._agents.clear()
        self._api_keys.clear()
        self._api_keys_of.clear()
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
        """Take a change made here or on another node: forget the agents and their API keys, remember the
        ended sessions."""
        self.generation += 1
        for agent_id in agent_ids:
            self._agents.pop(agent_id, None)
            for key_id in self._api_keys_of.pop(agent_id, ()):
                self._api_keys.pop(key_id, None)
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
