"""WebSocket close codes the hub uses, besides the standard 1000/1001/1009."""

from typing import Final

GOING_AWAY: Final = 1001
"""The hub is shutting down; reconnect (to another node) and resume."""
MESSAGE_TOO_BIG: Final = 1009
TRY_AGAIN_LATER: Final = 1013
"""The client did not read fast enough and its outbound queue filled; reconnect and resume."""
UNAUTHORIZED: Final = 4401
"""The credential was refused, or none was given in time."""

HEARTBEAT_METHOD: Final = "heartbeat"
"""A JSON-RPC notification the hub sends every few seconds so idle connections stay alive."""
AUTHENTICATE_METHOD: Final = "auth.authenticate"
"""The connection-level method that binds a credential to a WebSocket connection."""
