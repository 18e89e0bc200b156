"""Counters of the daemon: a log-bucket latency histogram and per-period rates."""

from __future__ import annotations

import math

import numpy as np

# bucket i holds latencies in [EDGES_US[i-1], EDGES_US[i]); 1 us .. ~16 s, 8 buckets per octave
_N_PER_OCTAVE = 8
EDGES_US = np.array([2 ** (i / _N_PER_OCTAVE) for i in range(0, 24 * _N_PER_OCTAVE + 1)])


class LatencyHistogram:
    """Latencies (ns in, microseconds out) in logarithmic buckets (9 % wide): constant
    memory, percentiles to within one bucket, exact max."""

    def __init__(self) -> None:
        self.counts = np.zeros(EDGES_US.size + 1, np.int64)
        self.n = 0
        self.max_us = 0.0
        self.sum_us = 0.0

    def add(self, latency_ns: int) -> None:
        us = max(latency_ns, 0) / 1000.0
        self.counts[int(np.searchsorted(EDGES_US, us, side="right"))] += 1
        self.n += 1
        self.sum_us += us
        if us > self.max_us:
            self.max_us = us

    def percentile_us(self, q: float) -> float:
        """Upper edge of the bucket holding the q-th percentile (0 < q <= 100)."""
        if self.n == 0:
            return math.nan
        rank = math.ceil(q / 100.0 * self.n)
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i >= EDGES_US.size:
            return self.max_us
        return min(float(EDGES_US[i]), self.max_us)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        self.n += other.n
        self.sum_us += other.sum_us
        self.max_us = max(self.max_us, other.max_us)

    def summary(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "p50_us": _finite(self.percentile_us(50)),
            "p99_us": _finite(self.percentile_us(99)),
            "max_us": round(self.max_us, 3),
            "mean_us": round(self.sum_us / self.n, 3) if self.n else 0.0,
        }


def _finite(v: float) -> float:
    return 0.0 if math.isnan(v) else round(v, 3)
