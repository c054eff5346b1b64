"""Shared output of every benchmark: a JSON file and a table of figures beside their goals."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    """One measured figure and the goal it is held against."""

    name: str
    value: float
    unit: str
    goal: str
    met: bool | None = None


def write(name: str, figures: list[Figure], params: dict[str, object]) -> Path:
    """Write ``bench/results/<name>.json`` and print the table; returns the file's path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": params,
        "figures": [asdict(f) for f in figures],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    width = max(len(f.name) for f in figures)
    print(f"\n{name}")
    print(f"{'figure':<{width}}  {'value':>12}  {'unit':<10} goal")
    for f in figures:
        mark = "" if f.met is None else (" (met)" if f.met else " (NOT met)")
        print(f"{f.name:<{width}}  {f.value:>12.1f}  {f.unit:<10} {f.goal}{mark}")
    print(f"-> {path}")
    return path
