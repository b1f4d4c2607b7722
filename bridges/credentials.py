"""Reading the caller's credential from an HTTP or WebSocket handshake."""

from starlette.datastructures import Headers

from hub.core import Hub
from hub.principal import Principal
from protocol.errors import Unauthorized


def credential_from(headers: Headers) -> str | None:
    """`Authorization: Bearer <token or key>`, else `X-API-Key`, else None."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be `Bearer <access token or API key>`")
        return value.strip()
    return headers.get("x-api-key")


async def principal_from(hub: Hub, headers: Headers, address: str) -> Principal:
    """The caller of a request; anonymous when it carries no credential.

    Raises:
        Unauthorized, Forbidden: the credential it carries is refused.
    """
    return await hub.authenticate(credential_from(headers), address)


def address_of(client: object) -> str:
    host = getattr(client, "host", None)
    return str(host) if host else "unknown"
