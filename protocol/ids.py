"""Prefixed, time-sortable, opaque IDs (`agt_…`, `key_…`, `cnv_…`, `msg_…`).

26 Crockford base32 characters after the prefix: 48 bits of milliseconds then 80 random bits, the
ULID layout, so IDs sort by creation time and need no coordination between nodes.
"""

import os
import re
import time
from typing import Final

_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"

AGENT: Final = "agt"
API_KEY: Final = "key"
REFRESH_TOKEN: Final = "rft"
INVITE: Final = "inv"
SESSION: Final = "ses"
CONVERSATION: Final = "cnv"
MESSAGE: Final = "msg"
BLOCK: Final = "blk"
MEMORY: Final = "mem"
FILE: Final = "fil"
DOCUMENT: Final = "doc"
PASSAGE: Final = "chk"
WORKFLOW: Final = "wfl"
EXECUTION: Final = "exe"
WEBHOOK: Final = "whk"
DELIVERY: Final = "whd"
SCHEDULE: Final = "sch"


_PAIRS: Final = [first + second for first in _ALPHABET for second in _ALPHABET]
"""The two characters of every 10-bit value: 13 lookups write an ID's 26 characters."""
_SHIFTS: Final = tuple(range(120, -1, -10))


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{''.join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])}"


def is_id(prefix: str, value: str) -> bool:
    return re.fullmatch(rf"{prefix}_[{_ALPHABET}]{{26}}", value) is not None
