"""Who is calling: built only by authentication, never from a request parameter."""

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from protocol.identity import Scope


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one operation.

    `agent_id` is None for an anonymous caller (registration, token exchange). `address` is the
    client's network address, used to rate-limit anonymous and recovery attempts.
    """

    address: str
    agent_id: str | None = None
    handle: str | None = None
    scopes: frozenset[Scope] = frozenset()
    is_admin: bool = False
    kind: Literal["anonymous", "access_token", "api_key", "workflow"] = "anonymous"
    """`workflow`: a workflow's step, acting as its owner with the scopes the workflow was granted."""
    key_id: str | None = None
    session_id: str | None = None
    expires_at: datetime | None = None

    @property
    def authenticated(self) -> bool:
        return self.agent_id is not None

    @classmethod
    def anonymous(cls, address: str) -> "Principal":
        return cls(address=address)
