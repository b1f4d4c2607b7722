"""Token-bucket rate limits, per caller and per operation class."""

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from protocol.errors import RateLimited

from .clock import Clock
from .config import RateLimit, Settings

MAX_BUCKETS: Final = 100_000


class RateClass(StrEnum):
    AUTH = "auth"
    RECOVERY = "recovery"
    READ = "read"
    WRITE = "write"
    UPLOAD = "upload"


@dataclass(frozen=True)
class BucketState:
    limit: int
    remaining: int
    reset_seconds: float
    """Seconds until the bucket is full again."""


class RateLimiter:
    """Buckets keyed by (class, caller). The least recently used are forgotten past MAX_BUCKETS,
    which can only make a limit more generous, never stricter."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._limits: dict[RateClass, RateLimit] = {
            RateClass.AUTH: settings.rate_auth,
            RateClass.RECOVERY: settings.rate_recovery,
            RateClass.READ: settings.rate_read,
            RateClass.WRITE: settings.rate_write,
            RateClass.UPLOAD: settings.rate_upload,
        }
        self._clock = clock
        self._buckets: OrderedDict[tuple[RateClass, str], tuple[float, float]] = OrderedDict()

    def take(self, rate_class: RateClass, caller: str) -> None:
        """Spend one token of `caller`'s bucket.

        Raises:
            RateLimited: the bucket is empty; `retry_after` says when one token will be back.
        """
        limit = self._limits[rate_class]
        now = self._clock.monotonic()
        key = (rate_class, caller)
        tokens, last = self._buckets.pop(key, (limit.burst, now))
        tokens = min(limit.burst, tokens + (now - last) * limit.per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            retry_after = (1 - tokens) / limit.per_second
            raise RateLimited(f"too many {rate_class} requests; retry in {retry_after:.1f}s", retry_after=retry_after,
                              limit=int(limit.burst))
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)

    def state(self, rate_class: RateClass, caller: str) -> BucketState:
        """Where `caller`'s bucket stands now (for `X-RateLimit-*` headers); spends nothing."""
        limit = self._limits[rate_class]
        now = self._clock.monotonic()
        tokens, last = self._buckets.get((rate_class, caller), (limit.burst, now))
        tokens = min(limit.burst, tokens + (now - last) * limit.per_second)
        return BucketState(
            limit=int(limit.burst), remaining=int(tokens), reset_seconds=(limit.burst - tokens) / limit.per_second
        )


def rate_key(address: str, agent_id: str | None) -> str:
    """Whose bucket a call spends: the agent's, or the client address's when anonymous."""
    return agent_id or f"address:{address}"
