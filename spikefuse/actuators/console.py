"""``console`` actuator: prints commands (rate-limited) and/or writes every one to CSV.

CSV columns: ``t_ns`` (CLOCK_MONOTONIC at application), ``kind`` (``cmd`` or ``safe``),
``seq``, ``cause_t_ns``, ``v0..v{n-1}``. Each row is flushed at once, so another process
can follow the file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from pydantic import Field

from spikefuse.actuators.base import Actuator, ActuatorConfig, register_actuator


class ConsoleConfig(ActuatorConfig):
    csv: Path | None = None
    print_hz: float = Field(2.0, ge=0.0, le=10_000.0)
    """Most printed lines per second (0: print only safe-value changes)."""


def command_timing(t_ns: int, cause_t_ns: int, refresh: bool) -> str:
    """What a printed command line says about time: the latency from the causing input for
    a new command; for a refresh (an unchanged command repeated), how long the output has
    not changed, which is no latency."""
    if refresh:
        return f" (refresh: unchanged for {(t_ns - cause_t_ns) / 1e9:.1f} s)"
    return f" latency {(t_ns - cause_t_ns) / 1e3:.0f} us"


@register_actuator("console", ConsoleConfig)
class ConsoleActuator(Actuator):
    """Prints motor commands and/or writes them to a CSV file."""

    def __init__(self, cfg: ConsoleConfig):
        super().__init__(cfg)
        self.cfg: ConsoleConfig = cfg
        self._csv = cfg.open_csv(cfg.csv) if cfg.csv is not None else None
        self._n_cols = None
        self._print_period_ns = round(1e9 / cfg.print_hz) if cfg.print_hz > 0 else None
        self._next_print_ns = 0
        self.n_applied = 0
        self.last = None

    def apply(
        self,
        values: np.ndarray,
        *,
        safe: bool,
        seq: int,
        cause_t_ns: int,
        t_ns: int,
        refresh: bool = False,
    ) -> None:
        self.n_applied += 1
        self.last = values
        kind = "safe" if safe else "cmd"
        if self._csv is not None:
            if self._n_cols is None:
                self._n_cols = values.size
                cols = ",".join(f"v{i}" for i in range(values.size))
                self._csv.write(f"t_ns,kind,seq,cause_t_ns,{cols}\n")
            vals = ",".join(repr(float(v)) for v in values)
            self._csv.write(f"{t_ns},{kind},{seq},{cause_t_ns},{vals}\n")
        due = self._print_period_ns is not None and t_ns >= self._next_print_ns
        if safe or due:
            if self._print_period_ns is not None:
                self._next_print_ns = t_ns + self._print_period_ns
            shown = " ".join(f"{v:+.3f}" for v in values)
            when = "" if safe else command_timing(t_ns, cause_t_ns, refresh)
            print(f"{self.cfg.name} {kind} [{shown}]{when}", file=sys.stdout, flush=True)

    def metrics(self) -> dict[str, object]:
        return {"n_applied": self.n_applied}

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
