"""Counters and latency histograms of operations, rendered in the Prometheus text format."""

from collections import defaultdict
from collections.abc import Callable
from typing import Final, Literal

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self._calls: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._latency_buckets: defaultdict[str, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS) + 1))
        self._latency_sum: defaultdict[str, float] = defaultdict(float)
        self._sampled: dict[str, tuple[Literal["gauge", "counter"], Callable[[], float]]] = {}

    def sample(self, name: str, kind: Literal["gauge", "counter"], read: Callable[[], float]) -> None:
        """A metric read from its owner when /metrics is rendered (what it counts is kept there)."""
        self._sampled[name] = (kind, read)

    def record(self, operation: str, outcome: str, seconds: float) -> None:
        self._calls[(operation, outcome)] += 1
        buckets = self._latency_buckets[operation]
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        self._latency_sum[operation] += seconds

    def render(self) -> str:
        lines = [
            "# HELP parley_operations_total Operations dispatched, by outcome (ok or an error code).",
            "# TYPE parley_operations_total counter",
        ]
        for (operation, outcome), count in sorted(self._calls.items()):
            lines.append(f'parley_operations_total{{operation="{operation}",outcome="{outcome}"}} {count}')
        lines += [
            "# HELP parley_operation_seconds Time to run an operation inside the hub.",
            "# TYPE parley_operation_seconds histogram",
        ]
        for operation, buckets in sorted(self._latency_buckets.items()):
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'parley_operation_seconds_bucket{{operation="{operation}",le="{le}"}} {cumulative}')
            lines.append(f'parley_operation_seconds_sum{{operation="{operation}"}} {self._latency_sum[operation]}')
            lines.append(f'parley_operation_seconds_count{{operation="{operation}"}} {cumulative}')
        for name, (kind, read) in sorted(self._sampled.items()):
            lines += [f"# TYPE {name} {kind}", f"{name} {read()}"]
        return "\n".join(lines) + "\n"
