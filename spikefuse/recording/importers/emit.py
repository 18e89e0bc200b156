"""Encode samples into EventBatches exactly like the drivers, and write them in time order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.protocol import EventBatch


@dataclass
class StreamCounts:
    n_samples: int = 0
    n_batches: int = 0
    n_events: int = 0
    n_skipped_nonfinite: int = 0
    sample_rate_hz: float | None = None
    """1 / median sample interval of the source (before change-encoding)"""


class GroupEncoder:
    """One (sensor, group): its encoder and sequence numbers; collects batches."""

    def __init__(self, sensor: str, group: str, input_name: str, scale: float, n_channels: int):
        self.sensor = sensor
        self.group = group
        self.input = input_name
        self.scale = float(scale)
        self.encoder = SigmaDeltaEncoder(n_channels, self.scale)
        self.seq = 0
        self.batches: list[EventBatch] = []
        self.counts = StreamCounts()

    def _add(self, t_ns: int, ch: np.ndarray, co: np.ndarray, dt: np.ndarray | None) -> None:
        if ch.size == 0:
            return
        self.batches.append(
            EventBatch(self.sensor, self.seq, int(t_ns), self.input, self.scale, ch, co, 0, dt)
        )
        self.seq += 1
        self.counts.n_batches += 1
        self.counts.n_events += int(ch.size)

    def samples(self, t_ns: np.ndarray, values: np.ndarray) -> None:
        """``values[i]`` sampled at ``t_ns[i]`` (time order)."""
        enc = self.encoder
        for t, v in zip(t_ns.tolist(), np.asarray(values, np.float64), strict=True):
            ch, co = enc.encode(v)
            self._add(t, ch, co, None)
        self.counts.n_samples += len(t_ns)
        self.counts.n_skipped_nonfinite = enc.n_skipped_nonfinite
        d = np.diff(np.asarray(t_ns, np.int64))
        d = d[d > 0]
        if d.size:
            self.counts.sample_rate_hz = float(1e9 / np.median(d))


class FrameEncoder(GroupEncoder):
    """A camera group: frames through the DVS emulation."""

    def __init__(self, sensor: str, group: str, input_name: str, dvs: DvsEncoder):
        super().__init__(sensor, group, input_name, 1.0 / dvs.threshold, 1)
        self.dvs = dvs
        self._last_t: int | None = None

    def frame(self, t_ns: int, frame: np.ndarray) -> None:
        self.counts.n_samples += 1
        if self._last_t is None:
            interval = 1
        else:
            interval = max(1, t_ns - self._last_t)
        self._last_t = t_ns
        ch, co, dt = self.dvs.encode(t_ns, frame, interval)
        self._add(t_ns - interval, ch, co, dt if dt.any() else None)
        self.counts.n_skipped_nonfinite = self.dvs.n_skipped_nonfinite


class NativeEvents(GroupEncoder):
    """Native DVS events (x, y, polarity, t) batched per window, passed through as ±1."""

    def __init__(
        self, sensor: str, group: str, input_name: str, scale: float, width: int, window_ns: int
    ):
        super().__init__(sensor, group, input_name, scale, 1)
        self.width = int(width)
        self.window_ns = int(window_ns)

    def events(self, t_ns: np.ndarray, x: np.ndarray, y: np.ndarray, on: np.ndarray) -> None:
        if t_ns.size == 0:
            return
        self.counts.n_samples += int(t_ns.size)
        ch = (y.astype(np.int64) * self.width + x.astype(np.int64)).astype(np.int32)
        co = np.where(on, 1, -1).astype(np.int32)
        win = (t_ns - t_ns[0]) // self.window_ns
        cut = np.flatnonzero(np.diff(win)) + 1
        for a, b in zip(
            np.concatenate(([0], cut)).tolist(),
            np.concatenate((cut, [t_ns.size])).tolist(),
            strict=True,
        ):
            t0 = int(t_ns[a])
            dt = (t_ns[a:b] - t0).astype(np.int64)
            self._add(t0, ch[a:b].copy(), co[a:b].copy(), dt if dt.any() else None)


def merged(encoders: list[GroupEncoder]) -> list[EventBatch]:
    """Every batch of every encoder in acquisition-time order (ties: encoder order)."""
    items = [(b.t_ns, k, i, b) for k, e in enumerate(encoders) for i, b in enumerate(e.batches)]
    items.sort(key=lambda it: it[:3])
    return [it[3] for it in items]
