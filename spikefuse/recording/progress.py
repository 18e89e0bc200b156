"""A tiny progress bar for long runs: drawn on a terminal, silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_INTERVAL_S = 0.1
BAR_WIDTH = 30


class Progress:
    """``with Progress(total, "import") as p: p.update(n)``. Draws on ``stream`` (stderr)
    only when it is a tty (or ``enabled=True``), at most every 0.1 s."""

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.done = 0
        self.detail = ""  # shown after the counts (e.g. a loss)
        self._t0_s = time.monotonic()
        self._last_draw_s = -1.0
        self.n_draws = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now_s = time.monotonic()
        if now_s - self._last_draw_s >= REDRAW_INTERVAL_S or self.done >= self.total:
            self._draw(now_s)

    def _draw(self, now_s: float) -> None:
        self._last_draw_s = now_s
        self.n_draws += 1
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * BAR_WIDTH)
        elapsed_s = now_s - self._t0_s
        rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {frac * 100:5.1f}% {self.done}/{self.total} {rate:,.0f}/s"
            + (f" {self.detail}" if self.detail else "")
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
