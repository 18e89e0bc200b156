"""Counters of the daemon: a log-bucket latency histogram and per-period rates."""

from __future__ import annotations

import math

import numpy as np

# bucket i holds latencies in [EDGES_US[i-1], EDGES_US[i]); 1 us .. ~16 s, 8 buckets per octave
_N_PER_OCTAVE = 8
EDGES_US = np.array([2 ** (i / _N_PER_OCTAVE) for i in range(0, 24 * _N_PER_OCTAVE + 1)])
_EDGES = EDGES_US.tolist()
_N_EDGES = len(_EDGES)


def bucket_of(us: float) -> int:
    """``searchsorted(EDGES_US, us, side="right")`` in O(1) pure Python (the hot path)."""
    if us < 1.0:
        return 0
    i = min(int(math.log2(us) * _N_PER_OCTAVE) + 1, _N_EDGES)
    # log2 rounding can land one bucket off exactly at an edge: settle on the edges
    if us < _EDGES[i - 1]:
        return i - 1
    if i < _N_EDGES and us >= _EDGES[i]:
        return i + 1
    return i


class LatencyHistogram:
    """Latencies (ns in, microseconds out) in logarithmic buckets (9 % wide): constant
    memory, percentiles to within one bucket, exact max."""

    def __init__(self) -> None:
        self.counts = [0] * (EDGES_US.size + 1)
        self.n = 0
        self.max_us = 0.0
        self.sum_us = 0.0

    def add(self, latency_ns: int) -> None:
        us = latency_ns / 1000.0 if latency_ns > 0 else 0.0
        self.counts[bucket_of(us)] += 1
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
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
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
