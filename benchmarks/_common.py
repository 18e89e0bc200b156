"""Shared helpers for benchmarks: a result with a printable table and JSON fields."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchResult:
    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    header: tuple[str, ...] = ("measure", "value", "baseline", "ratio")
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append(tuple(_fmt(c) for c in cells))

    def render(self) -> str:
        widths = [len(h) for h in self.header]
        for r in self.rows:
            for i, c in enumerate(r):
                widths[i] = max(widths[i], len(c))
        line = "  ".join("-" * w for w in widths)
        out = [self.title, "=" * len(self.title)]
        out.append("  ".join(h.ljust(w) for h, w in zip(self.header, widths, strict=False)))
        out.append(line)
        for r in self.rows:
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)))
        out.extend(self.notes)
        out.append(
            f"(machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()})"
        )
        return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)
