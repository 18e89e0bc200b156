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


def add_to(hists: tuple[LatencyHistogram, ...], latency_ns: int) -> None:
    """One latency into each of ``hists`` (bucketed once: the per-command hot path)."""
    us = latency_ns / 1000.0 if latency_ns > 0 else 0.0
    b = bucket_of(us)
    for h in hists:
        h.counts[b] += 1
        h.n += 1
        h.sum_us += us
        if us > h.max_us:
            h.max_us = us


class LatencyHistogram:
    """Latencies (ns in, microseconds out) in logarithmic buckets (9 % wide): constant
    memory, percentiles to within one bucket, exact max."""

    def __init__(self) -> None:
        self.counts = [0] * (EDGES_US.size + 1)
        self.n = 0
        self.max_us = 0.0
        self.sum_us = 0.0

    def add(self, latency_ns: int) -> None:
        add_to((self,), latency_ns)

    def percentile_us(self, q: float) -> float:
        """Upper edge of the bucket holding the q-th percentile (0 < q <= 100)."""
        if self.n == 0:
            return math.nan
        rank = math.ceil(q / 100.0 * self.n)
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i >= EDGES_US.size:
            return self.max_us
        return min(float(EDGES_US[i]), self.max_us)

    def range_us(self, q: float) -> tuple[float, float]:
        """(lower, upper) edge of the bucket holding the q-th percentile: what the
        histogram knows about it (the upper edge is capped by the exact max)."""
        if self.n == 0:
            return math.nan, math.nan
        rank = math.ceil(q / 100.0 * self.n)
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        lo = float(EDGES_US[i - 1]) if i > 0 else 0.0
        hi = float(EDGES_US[i]) if i < EDGES_US.size else self.max_us
        return min(lo, self.max_us), min(hi, self.max_us)

    def describe(self) -> str:
        """``p50 1.8-2.0 ms, p99 9.7-10.6 ms, max 15.8 ms (n 1516)``: each percentile as the
        bucket it lies in, to two significant digits (buckets are 9 % wide)."""
        if self.n == 0:
            return "no samples"
        parts = []
        for q in (50, 99):
            lo, hi = self.range_us(q)
            parts.append(f"p{q} {format_us(lo, hi)}")
        parts.append(f"max {format_us(self.max_us)}")
        return ", ".join(parts) + f" (n {self.n})"

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


def _sig2(v: float) -> str:
    """Two significant digits, no trailing zeros beyond them (1.8, 18, 180, 0.42)."""
    if v == 0:
        return "0"
    digits = max(0, 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{digits}f}"


def format_us(lo: float, hi: float | None = None) -> str:
    """A latency (or a range of one) in us or ms, two significant digits."""
    top = lo if hi is None else hi
    unit, div = ("ms", 1000.0) if top >= 1000.0 else ("us", 1.0)
    if hi is None or _sig2(lo / div) == _sig2(hi / div):
        return f"{_sig2(top / div)} {unit}"
    return f"{_sig2(lo / div)}-{_sig2(hi / div)} {unit}"
