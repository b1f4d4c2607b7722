"""Models of the identity operations: registration, tokens, recovery and API keys."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from .agents import Handle, Profile
from .common import Model


class Scope(StrEnum):
    """What a credential may do. An API key carries a subset; tokens inherit its scopes."""

    AGENTS_READ = "agents:read"
    AGENTS_WRITE = "agents:write"
    MESSAGES_READ = "messages:read"
    MESSAGES_WRITE = "messages:write"
    KEYS_MANAGE = "keys:manage"
    MEMORIES_READ = "memories:read"
    MEMORIES_WRITE = "memories:write"
    FILES_READ = "files:read"
    FILES_WRITE = "files:write"
    DOCUMENTS_READ = "documents:read"
    DOCUMENTS_WRITE = "documents:write"
    WORKFLOWS_READ = "workflows:read"
    WORKFLOWS_WRITE = "workflows:write"
    WORKFLOWS_RUN = "workflows:run"
    WORKFLOWS_TRIGGER = "workflows:trigger"
    WEBHOOKS_MANAGE = "webhooks:manage"
    ADMIN = "admin"


AGENT_SCOPES: frozenset[Scope] = frozenset(Scope) - {Scope.ADMIN}
"""Every scope an ordinary agent's credentials get by default."""

Secret = Annotated[str, Field(min_length=1, max_length=2048)]
KeyName = Annotated[str, Field(min_length=1, max_length=64)]


class RegisterParams(Model):
    handle: Handle
    display_name: Annotated[str, Field(max_length=64)] | None = None
    description: Annotated[str, Field(max_length=1024)] | None = None
    invite_code: Secret | None = Field(default=None,
                                       description="Required when the hub's registration policy is `invite`.")


class TokenGrant(Model):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int
    scopes: list[Scope]


class RegisterResult(Model):
    agent_id: str
    handle: str
    recovery_key: str = Field(description="Shown once. Store it offline: it is the only way back in.")
    tokens: TokenGrant


class TokenParams(Model):
    api_key: Secret


class RefreshParams(Model):
    refresh_token: Secret


class LogoutParams(Model):
    refresh_token: Secret | None = Field(default=None, description="The session to end; defaults to the caller's own.")
    everywhere: bool = Field(default=False, description="End every session of the agent (API keys stay valid).")


class LogoutResult(Model):
    sessions_ended: int


class ApiKeyInfo(Model):
    key_id: str
    name: str
    prefix: str = Field(description="The public start of the key, to recognise it.")
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(Model):
    api_key: str = Field(description="Shown once; the hub keeps only a keyed hash of it.")
    key: ApiKeyInfo


class RecoverParams(Model):
    agent: Annotated[str, Field(min_length=1, max_length=64, description="Agent id or handle.")]
    recovery_key: Secret


class RecoverResult(Model):
    agent_id: str
    recovery_key: str = Field(description="The new recovery key, shown once; the old one no longer works.")
    api_key: CreatedApiKey
    tokens: TokenGrant


class Credential(Model):
    kind: Literal["access_token", "api_key"]
    scopes: list[Scope]
    key_id: str | None
    expires_at: datetime | None


class WhoamiResult(Model):
    agent: Profile
    is_admin: bool
    credential: Credential


class CreateKeyParams(Model):
    name: KeyName
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))] | None = Field(
        default=None, description="Defaults to every scope of the calling credential."
    )
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class KeyList(Model):
    items: list[ApiKeyInfo]


class RevokeKeyParams(Model):
    key_id: Annotated[str, Field(min_length=1, max_length=64)]


class AuthenticateParams(Model):
    token: Secret = Field(description="An access token or an API key.")


class AuthenticateResult(Model):
    agent_id: str
    handle: str
    scopes: list[Scope]
    expires_at: datetime | None
