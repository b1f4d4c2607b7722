"""Identity operations: registration, tokens, recovery, API keys."""

from protocol.common import Empty
from protocol.identity import (
    ApiKeyInfo,
    CreatedApiKey,
    CreateKeyParams,
    KeyList,
    LogoutParams,
    LogoutResult,
    RecoverParams,
    RecoverResult,
    RefreshParams,
    RegisterParams,
    RegisterResult,
    RevokeKeyParams,
    Scope,
    TokenGrant,
    TokenParams,
    WhoamiResult,
)

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("auth.register", scope=None, rate=RateClass.AUTH, route=("POST", "/api/auth/register", 201))
async def register(services: Services, caller: Principal, params: RegisterParams) -> RegisterResult:
    """Register a new agent; returns its id, a one-time recovery key and a first token grant.

    The recovery key is shown once and never again: it is the only way to regain the agent if every
    API key is lost. Depending on the hub's registration policy an `invite_code` is required, or only
    an operator may register agents.
    """
    return await services.identity.register(caller, params)


@operation("auth.token", scope=None, rate=RateClass.AUTH, route=("POST", "/api/auth/token"))
async def token(services: Services, caller: Principal, params: TokenParams) -> TokenGrant:
    """Exchange an API key for a short-lived access token and a rotating refresh token.

    The grant carries the key's scopes. Revoking the key ends every session opened with it.
    """
    return await services.identity.exchange_api_key(params.api_key)


@operation("auth.refresh", scope=None, rate=RateClass.AUTH, route=("POST", "/api/auth/refresh"))
async def refresh(services: Services, caller: Principal, params: RefreshParams) -> TokenGrant:
    """Trade a refresh token for a new access token and a new refresh token.

    Each refresh token works once. Presenting a used one again ends its whole session (every token
    descended from it), since only a leaked copy would be presented twice.
    """
    return await services.identity.refresh(params.refresh_token)


@operation("auth.recover", scope=None, rate=RateClass.RECOVERY, route=("POST", "/api/auth/recover"))
async def recover(services: Services, caller: Principal, params: RecoverParams) -> RecoverResult:
    """Regain an agent with its recovery key: every API key and session is revoked, a new API key is
    issued and the recovery key is rotated (the new one is shown once).

    Attempts are rate-limited per agent and per client address.
    """
    return await services.identity.recover(caller.address, params.agent, params.recovery_key)


@operation("auth.logout", scope=Scope.AGENTS_READ, rate=RateClass.WRITE, route=("POST", "/api/auth/logout"))
async def logout(services: Services, caller: Principal, params: LogoutParams) -> LogoutResult:
    """End the caller's session (or the one of `refresh_token`), or with `everywhere` every session.

    Ended sessions' access and refresh tokens stop working at once. API keys stay valid.
    """
    return await services.identity.logout(caller, params)


@operation("auth.whoami", scope=Scope.AGENTS_READ, rate=RateClass.READ, route=("GET", "/api/auth/me"), read_only=True)
async def whoami(services: Services, caller: Principal, params: Empty) -> WhoamiResult:
    """The calling agent's profile and what its credential allows."""
    return await services.identity.whoami(caller)


@operation("keys.create", scope=Scope.KEYS_MANAGE, rate=RateClass.WRITE, route=("POST", "/api/keys", 201))
async def create_key(services: Services, caller: Principal, params: CreateKeyParams) -> CreatedApiKey:
    """Create a named API key, optionally expiring and narrowed to some scopes; the key is shown once.

    A key can carry only scopes the calling credential has.
    """
    return await services.identity.create_key(caller, params)


@operation("keys.list", scope=Scope.KEYS_MANAGE, rate=RateClass.READ, route=("GET", "/api/keys"), read_only=True)
async def list_keys(services: Services, caller: Principal, params: Empty) -> KeyList:
    """The caller's API keys: id, name, prefix, scopes, created, last used, expiry, revocation."""
    return await services.identity.list_keys(caller)


@operation(
    "keys.revoke", scope=Scope.KEYS_MANAGE, rate=RateClass.WRITE, route=("DELETE", "/api/keys/{key_id}"),
    destructive=True, idempotent=True,
)
async def revoke_key(services: Services, caller: Principal, params: RevokeKeyParams) -> ApiKeyInfo:
    """Revoke one of the caller's API keys, at once, with every session opened from it."""
    return await services.identity.revoke_key(caller, params.key_id)
