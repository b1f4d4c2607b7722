"""Prefixed, time-sortable, opaque IDs (`agt_…`, `key_…`, `cnv_…`, `msg_…`).

26 Crockford base32 characters after the prefix: 48 bits of milliseconds then 80 random bits, the
ULID layout, so IDs sort by creation time and need no coordination between nodes.
"""

import os
import re
import threading
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


class _EntropyPool(threading.local):
    """Random bytes drawn from the OS 256 IDs at a time, one pool per thread.

    `os.urandom` is a system call that lets go of the interpreter lock. On the event loop, once per
    message sent, that handed the lock to the store's writer, and the loop then waited for it: a
    pool made sends 11% faster (bench/RESULTS.md). The bytes are the OS's, as before; a thread never
    shares its pool, and a forked child starts with an empty one.
    """

    pool = b""
    offset = 0


_POOL_BYTES: Final = 2560
_entropy = _EntropyPool()


def _empty_pool_after_fork() -> None:
    _entropy.__dict__.clear()  # the forking thread's pool; its class defaults make it empty


os.register_at_fork(after_in_child=_empty_pool_after_fork)


def _random_80_bits() -> int:
    entropy = _entropy
    start = entropy.offset
    if start >= len(entropy.pool):
        entropy.pool, start = os.urandom(_POOL_BYTES), 0
    entropy.offset = start + 10
    return int.from_bytes(entropy.pool[start : start + 10], "big")


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | _random_80_bits()
    return f"{prefix}_{''.join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])}"


def is_id(prefix: str, value: str) -> bool:
    return re.fullmatch(rf"{prefix}_[{_ALPHABET}]{{26}}", value) is not None
