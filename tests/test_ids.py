"""IDs: the ULID layout (48 bits of milliseconds, then 80 random bits) in Crockford base32."""

import time

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
