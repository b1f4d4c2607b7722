"""IDs: the ULID layout (48 bits of milliseconds, then 80 random bits) in Crockford base32."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from protocol.ids import MESSAGE, is_id, new_id

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def decoded(identifier: str) -> int:
    value = 0
    for char in identifier.split("_", 1)[1]:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_an_id_carries_its_creation_millisecond_and_random_bits() -> None:
    before = int(time.time() * 1000)
    identifiers = [new_id(MESSAGE) for _ in range(200)]
    after = int(time.time() * 1000)
    for identifier in identifiers:
        assert is_id(MESSAGE, identifier), identifier
        assert before <= decoded(identifier) >> 80 <= after
    assert len({decoded(identifier) & (2**80 - 1) for identifier in identifiers}) == 200


def test_ids_sort_by_creation_time() -> None:
    first = new_id(MESSAGE)
    time.sleep(0.002)
    assert new_id(MESSAGE) > first


def random_bits(identifier: str) -> int:
    return decoded(identifier) & (2**80 - 1)


def test_threads_drawing_at_once_never_share_random_bits() -> None:
    """Each thread draws from a pool of its own: none hands out bytes another already gave."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(lambda _: [new_id(MESSAGE) for _ in range(2_000)], range(8)))
    drawn = [random_bits(identifier) for batch in batches for identifier in batch]
    assert len(set(drawn)) == len(drawn) == 16_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_repeat_its_parents_random_bits() -> None:
    new_id(MESSAGE)  # the parent's pool is filled: its next bytes are already drawn
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and leaves at once
        os.write(write_end, "\n".join(new_id(MESSAGE) for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        from_child = {random_bits(identifier) for identifier in pipe.read().split("\n")}
    os.waitpid(child, 0)
    from_parent = {random_bits(new_id(MESSAGE)) for _ in range(10)}
    assert len(from_child) == 10
    assert not from_child & from_parent
