"""Token-bucket rate limits, per caller and per operation class."""

from collections import OrderedDict
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


class RateLimiter:
    """Buckets keyed by (class, caller). The least recently used are forgotten past MAX_BUCKETS,
    which can only make a limit more generous, never stricter."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._limits: dict[RateClass, RateLimit] = {
            RateClass.AUTH: settings.rate_auth,
            RateClass.RECOVERY: settings.rate_recovery,
            RateClass.READ: settings.rate_read,
            RateClass.WRITE: settings.rate_write,
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
