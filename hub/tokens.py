"""Access tokens: short-lived JWTs signed with Ed25519 (EdDSA), with a key id so keys can rotate."""

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from protocol import ids
from protocol.errors import Unauthorized
from protocol.identity import Scope

from .clock import Clock
from .secrets import ServerKeys

ISSUER = "parley"
AUDIENCE = "parley-hub"
VERIFIED_CACHE = 10_000
"""Verified access tokens remembered (each about 1 KiB with its claims)."""


@dataclass(frozen=True)
class AccessClaims:
    agent_id: str
    session_id: str
    key_id: str | None
    epoch: int
    scopes: frozenset[Scope]
    expires_at: datetime


class TokenSigner:
    """Mints and verifies access tokens. Expiry is judged by the hub's clock, like every other credential's."""

    def __init__(self, keys: ServerKeys, ttl_seconds: int, clock: Clock) -> None:
        self._clock = clock
        self._sign_kid, self._sign_key = keys.signing_keys[0]
        self._verify = {kid: key.public_key() for kid, key in keys.signing_keys}
        self.ttl_seconds = ttl_seconds
        # A string's signature never changes, only whether it has expired: an open WebSocket, whose
        # credential is checked on every call and every pushed event, is verified once.
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()

    def mint(self, *, agent_id: str, session_id: str, key_id: str | None, epoch: int, scopes: frozenset[Scope],
             now: datetime) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": agent_id,
            "sid": session_id,
            "ep": epoch,
            "scp": " ".join(sorted(scopes)),
            "iat": int(now.timestamp()),
            # Rounded up: a token lasts at least the `expires_in` its grant announces.
            "exp": math.ceil((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "jti": ids.new_id("jti"),
        }
        if key_id:
            claims["akid"] = key_id
        return jwt.encode(claims, self._sign_key, algorithm="EdDSA", headers={"kid": self._sign_kid})

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token.

        Raises:
            Unauthorized: malformed, wrongly signed, from an unknown key, or expired.
        """
        claims = self._verified.get(token)
        now = self._clock.now()
        if claims is not None and claims.expires_at > now:
            return claims
        claims = self._decode(token)
        if claims.expires_at <= now:
            raise Unauthorized("the access token has expired; exchange your API key or refresh token")
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str) -> AccessClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._verify.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthorized("the access token was signed by a key this hub does not know")
            claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "sub", "sid", "ep", "scp"], "verify_exp": False,
                                         "verify_iat": False})
        except jwt.PyJWTError:
            raise Unauthorized("the access token is not valid") from None
        try:
            scopes = frozenset(Scope(s) for s in str(claims["scp"]).split())
        except ValueError:
            raise Unauthorized("the access token is not valid") from None
        return AccessClaims(
            agent_id=str(claims["sub"]),
            session_id=str(claims["sid"]),
            key_id=claims.get("akid"),
            epoch=int(claims["ep"]),
            scopes=scopes,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
