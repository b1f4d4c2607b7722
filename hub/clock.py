"""Time, injected so tests and services agree on it."""

from datetime import UTC, datetime
import time


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
