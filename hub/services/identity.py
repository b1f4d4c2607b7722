"""Identity and credentials: registration, API keys, token exchange and rotation, recovery, logout.

Three layers (docs/design.md §4): the recovery key (argon2id, shown once), API keys (keyed hash,
shown once, scoped) and access tokens (short-lived JWTs) with rotating refresh tokens. A reused
refresh token ends its whole session family, since only a thief or a bug presents one twice.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import anyio
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.admin import CreateInviteParams, Invite
from protocol.errors import Conflict, Forbidden, NotFound, Unauthorized
from protocol.identity import (
    AGENT_SCOPES,
    ApiKeyInfo,
    CreatedApiKey,
    CreateKeyParams,
    Credential,
    KeyList,
    LogoutParams,
    LogoutResult,
    RecoverResult,
    RegisterParams,
    RegisterResult,
    Scope,
    TokenGrant,
    WhoamiResult,
)
from storage.queries import agents as agent_queries
from storage.queries import credentials as credential_queries
from storage.store import Store

from ..clock import Clock
from ..config import RegistrationPolicy, Settings
from ..principal import Principal
from ..ratelimit import RateClass, RateLimiter
from ..secrets import (
    API_KEY_KIND,
    INVITE_KIND,
    REFRESH_KIND,
    RecoveryKeyHasher,
    ServerKeys,
    issue,
    looks_like,
    new_recovery_key,
    parse,
)
from ..tokens import TokenSigner
from .agents import find_agent, load_profile
from .credential_state import ApiKeyState, CredentialState

T = TypeVar("T")

LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
ARGON2_THREADS: Final = 2

_BAD_API_KEY = "the API key is not valid"
_BAD_REFRESH = "the refresh token is not valid"


@dataclass(frozen=True)
class _Session:
    """A session to open in the same transaction as whatever grants it."""

    agent_id: str
    scopes: frozenset[Scope]
    key_id: str | None = None
    family_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A credential found good, for a connection that needs its caller on every call and pushed event."""

    principal: Principal
    generation: int
    """`CredentialState.generation` before the check: a later change to any credential makes this stale."""
    recheck_at: float
    """`Clock.monotonic()` time at which to authenticate again anyway: the credential's expiry, and for
    an API key at least as often as its `last_used_at` is kept (a connection keeps using it)."""


def _granted(scopes: frozenset[Scope], is_admin: bool) -> frozenset[Scope]:
    """The scopes a credential grants: `admin` only to an admin. `scopes` itself when nothing is
    taken away, so the principals of one token (one per open connection) share one set."""
    return scopes - {Scope.ADMIN} if Scope.ADMIN in scopes and not is_admin else scopes


def _key_info(row: Mapping[str, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=sorted(Scope(s) for s in row["scopes"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


class IdentityService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        keys: ServerKeys,
        state: CredentialState,
        limiter: RateLimiter,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._keys = keys
        self._state = state
        self._limiter = limiter
        self._signer = TokenSigner(keys, settings.access_token_ttl, clock)
        self._hasher = RecoveryKeyHasher(settings.argon2_memory_kib, settings.argon2_time_cost)
        self._argon2_threads = anyio.CapacityLimiter(ARGON2_THREADS)
        self._dummy_hash: str | None = None

    # -- authentication -------------------------------------------------------------------------

    async def authenticate(self, credential: str, address: str) -> Principal:
        """The principal behind an access token or an API key.

        Raises:
            Unauthorized: the credential is malformed, expired, revoked or unknown.
            Forbidden: the agent is suspended.
        """
        if looks_like(API_KEY_KIND, credential):
            return await self._authenticate_api_key(credential, address)
        claims = self._signer.verify(credential)
        state = await self._state.agent(claims.agent_id)
        if state is None or state.epoch != claims.epoch or self._state.session_ended(claims.session_id):
            raise Unauthorized("the access token has been revoked")
        if state.suspended:
            raise Forbidden("this agent is suspended")
        return Principal(
            address=address,
            agent_id=claims.agent_id,
            handle=state.handle,
            scopes=_granted(claims.scopes, state.is_admin),
            is_admin=state.is_admin,
            kind="access_token",
            key_id=claims.key_id,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
        )

    async def verify(self, credential: str, address: str) -> Verified:
        """`authenticate`, remembering enough to tell later, without a lookup, that it still holds.

        Raises:
            Unauthorized, Forbidden: see `authenticate`.
        """
        generation = self._state.generation
        principal = await self.authenticate(credential, address)
        valid_for = LAST_USED_RESOLUTION
        if principal.expires_at is not None:
            valid_for = min(valid_for, principal.expires_at - self._clock.now())
        return Verified(principal, generation, self._clock.monotonic() + valid_for.total_seconds())

    def still_valid(self, verified: Verified) -> bool:
        """True while nothing that can end a credential (revocation, suspension, logout, a peer's
        notice) has happened since `verified` was checked and it has not expired: the caller may be
        trusted without authenticating again. False means only "check again"."""
        return verified.generation == self._state.generation and self._clock.monotonic() < verified.recheck_at

    async def _authenticate_api_key(self, credential: str, address: str) -> Principal:
        key = await self._live_api_key(credential)
        state = await self._state.agent(key.agent_id)
        if state is None:
            raise Unauthorized(_BAD_API_KEY)
        if state.suspended:
            raise Forbidden("this agent is suspended")
        now = self._clock.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            key.last_used_at = now  # first, so the requests that overlap this one do not write it again
            await self._store.write(lambda conn: credential_queries.touch_api_key(conn, key.key_id, now))
        return Principal(
            address=address,
            agent_id=key.agent_id,
            handle=state.handle,
            scopes=_granted(key.scopes, state.is_admin),
            is_admin=state.is_admin,
            kind="api_key",
            key_id=key.key_id,
            expires_at=key.expires_at,
        )

    async def _live_api_key(self, credential: str) -> ApiKeyState:
        """The key behind `credential`, from the credential cache (a store read on a miss): only the
        stored hash of its secret is compared, and revocation and expiry are checked on every use.

        Raises:
            Unauthorized: the key is malformed, unknown, forged, revoked or expired.
        """
        parsed = parse(API_KEY_KIND, ids.API_KEY, credential)
        if parsed is None:
            raise Unauthorized(_BAD_API_KEY)
        key_id, secret = parsed
        key = await self._state.api_key(key_id)
        if key is None or not self._keys.matches(secret, key.secret_hash):
            raise Unauthorized(_BAD_API_KEY)
        if key.revoked_at is not None:
            raise Unauthorized("the API key has been revoked")
        if key.expires_at is not None and key.expires_at <= self._clock.now():
            raise Unauthorized("the API key has expired")
        return key

    # -- registration and recovery --------------------------------------------------------------

    async def register(self, caller: Principal, params: RegisterParams) -> RegisterResult:
        invite = None
        if not caller.is_admin:
            policy = self._settings.registration
            if policy is RegistrationPolicy.CLOSED:
                raise Forbidden("registration is closed on this hub; ask its operator for an account")
            if policy is RegistrationPolicy.INVITE:
                invite = self._parse_invite(params.invite_code)
        recovery_key = new_recovery_key()
        recovery_hash = await self._argon2(self._hasher.hash, recovery_key)
        now = self._clock.now()
        agent_id = ids.new_id(ids.AGENT)

        def write(conn: Connection) -> TokenGrant:
            if invite is not None:
                self._spend_invite(conn, *invite, now)
            self._insert_agent(conn, agent_id, params, recovery_hash, is_admin=False, now=now)
            return self._open_session(conn, _Session(agent_id, AGENT_SCOPES), epoch=0, now=now)

        try:
            grant = await self._store.write(write)
        except IntegrityError:
            raise Conflict(f"the handle {params.handle!r} is taken", {"field": "handle"}) from None
        return RegisterResult(agent_id=agent_id, handle=params.handle, recovery_key=recovery_key, tokens=grant)

    def _parse_invite(self, invite_code: str | None) -> tuple[str, str]:
        parsed = parse(INVITE_KIND, ids.INVITE, invite_code) if invite_code else None
        if parsed is None:
            raise Forbidden("registration on this hub needs a valid invite code", {"field": "invite_code"})
        return parsed

    def _spend_invite(self, conn: Connection, invite_id: str, secret: str, now: datetime) -> None:
        row = credential_queries.get_invite(conn, invite_id)
        if row is None or not self._keys.matches(secret, row["secret_hash"]) or not credential_queries.use_invite(
            conn, invite_id, now
        ):
            raise Forbidden("the invite code is not valid, used up or expired", {"field": "invite_code"})

    def _insert_agent(
        self, conn: Connection, agent_id: str, params: RegisterParams, recovery_hash: str, *, is_admin: bool,
        now: datetime,
    ) -> None:
        agent_queries.insert_agent(
            conn,
            {
                "id": agent_id,
                "handle": params.handle,
                "display_name": params.display_name,
                "description": params.description,
                "visibility": "public",
                "metadata": {},
                "is_admin": is_admin,
                "recovery_key_hash": recovery_hash,
                "credential_epoch": 0,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def bootstrap_admin(self, handle: str) -> tuple[str, str, CreatedApiKey]:
        """Create the first operator: `(agent_id, recovery_key, api key)`. Refuses if an admin exists."""
        recovery_key = new_recovery_key()
        recovery_hash = await self._argon2(self._hasher.hash, recovery_key)
        now = self._clock.now()
        agent_id = ids.new_id(ids.AGENT)

        def write(conn: Connection) -> CreatedApiKey:
            if agent_queries.any_admin(conn):
                raise Conflict("this hub already has an admin; use its recovery key to get back in")
            if agent_queries.handle_taken(conn, handle):
                raise Conflict(f"the handle {handle!r} is taken")
            self._insert_agent(conn, agent_id, RegisterParams(handle=handle), recovery_hash, is_admin=True, now=now)
            return self._insert_api_key(conn, agent_id, "bootstrap", frozenset(Scope), None, now)

        return agent_id, recovery_key, await self._store.write(write)

    async def recover(self, address: str, agent_ref: str, recovery_key: str) -> RecoverResult:
        # Limited per target agent as well as per address, so a distributed guesser gains nothing.
        row = await self._store.read(lambda conn: find_agent(conn, agent_ref), bounded=True)
        # Keyed by the resolved agent id, so naming it by handle or by id shares one bucket.
        self._limiter.take(RateClass.RECOVERY, f"agent:{row['id'] if row else agent_ref.strip().lower()}")
        stored_hash = row["recovery_key_hash"] if row else None
        # An unknown agent costs the same argon2 check as a known one, so timing tells nothing.
        valid = await self._argon2(self._hasher.verify, stored_hash or await self._unknown_agent_hash(), recovery_key)
        if not valid or row is None:
            raise Unauthorized("the agent or recovery key is not valid")
        agent_id = row["id"]
        new_key = new_recovery_key()
        new_hash = await self._argon2(self._hasher.hash, new_key)
        now = self._clock.now()

        def write(conn: Connection) -> tuple[CreatedApiKey, TokenGrant, list[str]]:
            fresh = agent_queries.get_agent(conn, agent_id)
            if fresh is None or fresh["recovery_key_hash"] != stored_hash:
                raise Unauthorized("the recovery key was rotated meanwhile")
            if fresh["suspended_at"] is not None:
                raise Forbidden("this agent is suspended")
            epoch = agent_queries.bump_credential_epoch(conn, agent_id, {"recovery_key_hash": new_hash})
            credential_queries.revoke_all_api_keys(conn, agent_id, now)
            ended = credential_queries.revoke_families(conn, now, agent_id=agent_id)
            scopes = AGENT_SCOPES | ({Scope.ADMIN} if fresh["is_admin"] else set())
            key = self._insert_api_key(conn, agent_id, "recovered", frozenset(scopes), None, now)
            grant = self._open_session(conn, _Session(agent_id, frozenset(scopes), key.key.key_id), epoch, now)
            return key, grant, ended

        key, grant, ended = await self._store.write(write)
        self._state.forget(agent_id)
        self._state.end_sessions(ended)
        return RecoverResult(agent_id=agent_id, recovery_key=new_key, api_key=key, tokens=grant)

    async def _unknown_agent_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._argon2(self._hasher.hash, new_recovery_key())
        return self._dummy_hash

    async def _argon2(self, fn: Callable[..., T], *args: str) -> T:
        """argon2 is deliberately slow: run it in a thread, at most ARGON2_THREADS at once."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._argon2_threads)

    # -- tokens ---------------------------------------------------------------------------------

    def _open_session(self, conn: Connection, session: _Session, epoch: int, now: datetime) -> TokenGrant:
        token_id = ids.new_id(ids.REFRESH_TOKEN)
        family_id = session.family_id or ids.new_id(ids.SESSION)
        refresh_token, secret = issue(REFRESH_KIND, token_id)
        credential_queries.insert_refresh_token(
            conn,
            {
                "id": token_id,
                "family_id": family_id,
                "agent_id": session.agent_id,
                "api_key_id": session.key_id,
                "secret_hash": self._keys.keyed_hash(secret),
                "scopes": sorted(session.scopes),
                "created_at": now,
                "expires_at": now + timedelta(seconds=self._settings.refresh_token_ttl),
            },
        )
        access_token = self._signer.mint(
            agent_id=session.agent_id, session_id=family_id, key_id=session.key_id, epoch=epoch,
            scopes=session.scopes, now=now,
        )
        return TokenGrant(
            access_token=access_token,
            expires_in=self._signer.ttl_seconds,
            refresh_token=refresh_token,
            refresh_expires_in=self._settings.refresh_token_ttl,
            scopes=sorted(session.scopes),
        )

    async def exchange_api_key(self, api_key: str) -> TokenGrant:
        key = await self._live_api_key(api_key)
        now = self._clock.now()

        def write(conn: Connection) -> TokenGrant:
            row = credential_queries.get_api_key(conn, key.key_id)  # the store's word, in the transaction
            if row is None or row["revoked_at"] is not None:
                raise Unauthorized("the API key has been revoked")
            agent = agent_queries.get_agent(conn, row["agent_id"])
            if agent is None:
                raise Unauthorized(_BAD_API_KEY)
            if agent["suspended_at"] is not None:
                raise Forbidden("this agent is suspended")
            credential_queries.touch_api_key(conn, row["id"], now)
            key.last_used_at = now
            scopes = frozenset(Scope(s) for s in row["scopes"])
            session = _Session(agent["id"], scopes if agent["is_admin"] else scopes - {Scope.ADMIN}, row["id"])
            return self._open_session(conn, session, agent["credential_epoch"], now)

        return await self._store.write(write)

    async def refresh(self, refresh_token: str) -> TokenGrant:
        parsed = parse(REFRESH_KIND, ids.REFRESH_TOKEN, refresh_token)
        if parsed is None:
            raise Unauthorized(_BAD_REFRESH)
        token_id, secret = parsed
        now = self._clock.now()

        def write(conn: Connection) -> TokenGrant | str:
            row = credential_queries.get_refresh_token(conn, token_id)
            if row is None or not self._keys.matches(secret, row["secret_hash"]):
                raise Unauthorized(_BAD_REFRESH)
            if row["revoked_at"] is not None:
                raise Unauthorized("the session of this refresh token has ended")
            if row["expires_at"] <= now:
                raise Unauthorized("the refresh token has expired")
            if not credential_queries.mark_refresh_token_used(conn, token_id, now):
                credential_queries.revoke_families(conn, now, family_id=row["family_id"])
                return row["family_id"]  # committed, then reported as an error below
            agent = agent_queries.get_agent(conn, row["agent_id"])
            assert agent is not None
            if agent["suspended_at"] is not None:
                raise Forbidden("this agent is suspended")
            session = _Session(agent["id"], frozenset(Scope(s) for s in row["scopes"]), row["api_key_id"],
                               row["family_id"])
            return self._open_session(conn, session, agent["credential_epoch"], now)

        outcome = await self._store.write(write)
        if isinstance(outcome, str):
            self._state.end_sessions([outcome])
            raise Unauthorized("this refresh token was already used; its session has been ended for safety")
        return outcome

    async def logout(self, caller: Principal, params: LogoutParams) -> LogoutResult:
        assert caller.agent_id is not None
        agent_id = caller.agent_id
        now = self._clock.now()
        family_id = caller.session_id
        if params.refresh_token is not None:
            parsed = parse(REFRESH_KIND, ids.REFRESH_TOKEN, params.refresh_token)
            row = (await self._store.read(lambda conn: credential_queries.get_refresh_token(conn, parsed[0]),
                                          bounded=True)
                   if parsed else None)
            if parsed is None or row is None or row["agent_id"] != agent_id or not self._keys.matches(
                parsed[1], row["secret_hash"]
            ):
                raise Unauthorized(_BAD_REFRESH)
            family_id = row["family_id"]

        def write(conn: Connection) -> list[str]:
            if params.everywhere:
                agent_queries.bump_credential_epoch(conn, agent_id)
                return credential_queries.revoke_families(conn, now, agent_id=agent_id)
            if family_id is None:
                return []
            return credential_queries.revoke_families(conn, now, family_id=family_id)

        ended = await self._store.write(write)
        if params.everywhere:
            self._state.forget(agent_id)
        if family_id is not None:
            ended = sorted(set(ended) | {family_id})
        self._state.end_sessions(ended)
        return LogoutResult(sessions_ended=len(ended))

    async def whoami(self, caller: Principal) -> WhoamiResult:
        assert caller.agent_id is not None
        profile = await self._store.read(lambda conn: load_profile(conn, caller.agent_id or ""), bounded=True)
        if profile is None:
            raise NotFound("the calling agent no longer exists")
        return WhoamiResult(
            agent=profile,
            is_admin=caller.is_admin,
            credential=Credential(
                kind="api_key" if caller.kind == "api_key" else "access_token",
                scopes=sorted(caller.scopes),
                key_id=caller.key_id,
                expires_at=caller.expires_at,
            ),
        )

    # -- API keys -------------------------------------------------------------------------------

    def _insert_api_key(
        self, conn: Connection, agent_id: str, name: str, scopes: frozenset[Scope], expires_at: datetime | None,
        now: datetime,
    ) -> CreatedApiKey:
        key_id = ids.new_id(ids.API_KEY)
        api_key, secret = issue(API_KEY_KIND, key_id)
        row = {
            "id": key_id,
            "agent_id": agent_id,
            "name": name,
            "prefix": api_key[:12],
            "secret_hash": self._keys.keyed_hash(secret),
            "scopes": sorted(scopes),
            "created_at": now,
            "last_used_at": None,
            "expires_at": expires_at,
            "revoked_at": None,
        }
        credential_queries.insert_api_key(conn, row)
        return CreatedApiKey(api_key=api_key, key=_key_info(row))

    async def create_key(self, caller: Principal, params: CreateKeyParams) -> CreatedApiKey:
        assert caller.agent_id is not None
        agent_id = caller.agent_id
        scopes = frozenset(params.scopes) if params.scopes is not None else caller.scopes
        if not scopes <= caller.scopes:
            raise Forbidden(
                "a key cannot have scopes its creator lacks", {"missing": sorted(scopes - caller.scopes)}
            )
        now = self._clock.now()
        expires_at = now + timedelta(days=params.expires_in_days) if params.expires_in_days else None
        limit = self._settings.max_api_keys

        def write(conn: Connection) -> CreatedApiKey:
            if credential_queries.count_live_api_keys(conn, agent_id) >= limit:
                raise Conflict(f"an agent may have at most {limit} live API keys; revoke one first", {"limit": limit})
            return self._insert_api_key(conn, agent_id, params.name, scopes, expires_at, now)

        return await self._store.write(write)

    async def list_keys(self, caller: Principal) -> KeyList:
        assert caller.agent_id is not None
        agent_id = caller.agent_id
        rows = await self._store.read(lambda conn: credential_queries.list_api_keys(conn, agent_id), bounded=True)
        return KeyList(items=[_key_info(row) for row in rows])

    async def revoke_key(self, caller: Principal, key_id: str) -> ApiKeyInfo:
        assert caller.agent_id is not None
        agent_id = caller.agent_id
        now = self._clock.now()

        def write(conn: Connection) -> tuple[ApiKeyInfo, list[str]]:
            row = credential_queries.get_api_key(conn, key_id)
            if row is None or row["agent_id"] != agent_id:
                raise NotFound(f"no API key {key_id!r}")
            credential_queries.revoke_api_key(conn, key_id, now)
            ended = credential_queries.revoke_families(conn, now, api_key_id=key_id)
            fresh = credential_queries.get_api_key(conn, key_id)
            assert fresh is not None
            return _key_info(fresh), ended

        info, ended = await self._store.write(write)
        # The key itself may be open on connections (here and on other nodes) that trust it until
        # the credential state changes; forgetting its agent is that change, even with no session to end.
        self._state.forget(agent_id)
        self._state.end_sessions(ended)
        return info

    async def create_invite(self, caller: Principal, params: CreateInviteParams) -> Invite:
        invite_id = ids.new_id(ids.INVITE)
        code, secret = issue(INVITE_KIND, invite_id)
        now = self._clock.now()
        expires_at = now + timedelta(hours=params.expires_in_hours)
        row = {
            "id": invite_id,
            "secret_hash": self._keys.keyed_hash(secret),
            "created_by": caller.agent_id,
            "uses_left": params.uses,
            "created_at": now,
            "expires_at": expires_at,
        }
        await self._store.write(lambda conn: credential_queries.insert_invite(conn, row))
        return Invite(invite_code=code, invite_id=invite_id, uses=params.uses, expires_at=expires_at)
