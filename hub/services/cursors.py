"""Opaque page cursors: a keyset position, base64url-encoded JSON, so clients cannot build their own."""

import base64
import binascii
import json
from typing import Any

from protocol.errors import InvalidRequest


def encode(*position: str | int) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, *types: type) -> tuple[Any, ...] | None:
    """The position in `cursor` (None for the first page), checked against `types`.

    Raises:
        InvalidRequest: the cursor is not one this hub issued for this listing.
    """
    if cursor is None:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        position = None
    if (
        not isinstance(position, list)
        or len(position) != len(types)
        or not all(type(value) is kind for value, kind in zip(position, types, strict=True))
    ):
        raise InvalidRequest("the cursor is not one this hub issued", {"field": "cursor"})
    return tuple(position)
