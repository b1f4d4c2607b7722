"""What every benchmark reports: figures beside a floor measured in the same run, as JSON and a table.

Absolute times drift on a shared machine, so a figure is judged by its ratio to a floor: the same
work done by the thinnest thing the same stack can do (an echo server, a bare insert loop, a bare
route). A scenario returns `Figure`s; `emit` prints one JSON record per run and a readable table.
"""

import argparse
import json
import math
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `samples`; NaN when there are none."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Figure:
    """One measured quantity, with the floor it is judged against and the issue's target."""

    scenario: str
    metric: str
    value: float
    unit: str
    backend: str
    floor: float | None = None
    """The same quantity for the floor; the ratio is value / floor."""
    floor_name: str = ""
    target: str = ""
    """The issue's target in words (e.g. ">= 5000/s"); empty when the issue sets none."""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0:
            return None
        return self.value / self.floor


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(figures: Sequence[Figure]) -> str:
    header = ("scenario", "backend", "metric", "value", "unit", "floor", "ratio", "target", "met")
    rows = [
        (f.scenario, f.backend, f.metric, _fmt(f.value), f.unit,
         f"{_fmt(f.floor)} ({f.floor_name})" if f.floor is not None else "-",
         f"{f.ratio:.2f}x" if f.ratio is not None else "-", f.target or "-",
         {None: "-", True: "yes", False: "NO"}[f.met])
        for f in figures
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def emit(figures: Sequence[Figure], *, json_path: str | None = None) -> None:
    """Print the table, and the JSON record on one line after it (or into `json_path`)."""
    record = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
    }
    print(table(figures))
    text = json.dumps(record)
    if json_path:
        with open(json_path, "w") as out:
            out.write(text + "\n")
    else:
        print(text)


def backends(choice: str) -> list[str]:
    """The server backends a `--backend asyncio|trio|both` option names."""
    return ["asyncio", "trio"] if choice == "both" else [choice]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """`--backend asyncio|trio|both` (default both), `--quick` (smoke-run sizes) and `--json PATH`."""
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--json", dest="json_path", default=None, help="write the JSON record here")


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """`--seconds` of load per variant and `--rounds` (hub and floor alternate), for `load_plan`."""
    parser.add_argument("--seconds", type=float, help="measuring time per variant (default 6, quick 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating hub and floor (quick: 1)")


def load_plan(args: argparse.Namespace) -> tuple[float, int]:
    """(seconds, rounds) from `add_common_options` and `add_load_options`."""
    seconds = args.seconds or (1.0 if args.quick else 6.0)
    return seconds, 1 if args.quick else args.rounds
