"""What the live view knows, updated message by message (pure numpy, no I/O, no rerun).

* :class:`CameraState`: a DVS stream integrated back into the state its events stand for.
  Each count of channel ``y*width + x`` is one contrast-threshold crossing of that pixel's
  log intensity (the camera driver's :class:`~spikefuse.encoding.DvsEncoder`), so
  ``sum(counts) / scale`` is the pixel's log-intensity change since the stream began. A
  Heartbeat's ``totals`` (the driver's running sums) replace the sums, which makes the
  image exact again after lost batches or a late start of the viewer.
* :class:`RateMeter`: events/s per stream and commands/s per actuator.
* :class:`MotorTrace`: the newest command of each actuator.
* :class:`PoseTrack`: the simulated robot's pose, trail and track (``status/sim``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikefuse.protocol import HEARTBEAT_ENDED, EventBatch, Heartbeat, MotorCommand, Status

BACKGROUND_RGB = (24, 24, 24)
ON_RGB = (40, 230, 40)
"""Colour of a pixel whose events in the window were mostly positive (brighter)."""
OFF_RGB = (230, 40, 40)
"""... mostly negative (darker)."""

POSE_KEYS = ("x_m", "y_m", "yaw_rad")
SIM_SCALARS = ("v_mps", "w_radps", "progress_m", "cross_track_m", "lap", "collisions")


@dataclass
class CameraState:
    """A ``width`` x ``height`` DVS stream (``channel = y*width + x``)."""

    width: int
    height: int
    sums: np.ndarray = field(init=False)
    window: np.ndarray = field(init=False)
    scale: float = 1.0
    t_ns: int = 0
    n_batches: int = 0
    n_events: int = 0
    n_outside: int = 0
    """events on channels beyond width*height (a layout that does not match the stream)"""
    n_resyncs: int = 0
    changed: bool = False

    def __post_init__(self) -> None:
        n = self.width * self.height
        self.sums = np.zeros(n, np.int64)
        self.window = np.zeros(n, np.int64)

    def apply(self, batch: EventBatch) -> None:
        ch, co = batch.channels, batch.counts.astype(np.int64)
        n = self.sums.size
        if ch.size and int(ch.max()) >= n:
            inside = ch < n
            self.n_outside += int(ch.size - np.count_nonzero(inside))
            ch, co = ch[inside], co[inside]
        np.add.at(self.sums, ch, co)
        np.add.at(self.window, ch, co)
        self.scale = batch.scale
        self.t_ns = max(self.t_ns, batch.t_ns)
        self.n_batches += 1
        self.n_events += int(ch.size)
        self.changed = True

    def resync(self, totals: np.ndarray, t_ns: int) -> None:
        """The driver's running sums replace ours (a keyframe)."""
        n = min(totals.size, self.sums.size)
        if np.array_equal(self.sums[:n], totals[:n]) and not self.sums[n:].any():
            return
        self.sums[:] = 0
        self.sums[:n] = totals[:n]
        self.n_resyncs += 1
        self.t_ns = max(self.t_ns, t_ns)
        self.changed = True

    def log_change(self) -> np.ndarray:
        """Per-pixel log-intensity change since the stream began, (height, width)."""
        return (self.sums / self.scale).reshape(self.height, self.width)

    def image_u8(self) -> np.ndarray:
        """The integrated state as a grey image: no change is mid-grey, brighter is
        lighter; scaled so the largest change of this frame spans the range."""
        change = self.log_change()
        span = max(float(np.abs(change).max()), 2.0 / self.scale)
        return np.clip(127.5 + change * (127.5 / span), 0, 255).astype(np.uint8)

    def take_events_rgb(self) -> np.ndarray:
        """The events since the previous call as an RGB image (ON green, OFF red), and
        start a new window."""
        win = self.window.reshape(self.height, self.width)
        rgb = np.empty((self.height, self.width, 3), np.uint8)
        rgb[:] = BACKGROUND_RGB
        rgb[win > 0] = ON_RGB
        rgb[win < 0] = OFF_RGB
        self.window[:] = 0
        self.changed = False
        return rgb


@dataclass
class RateMeter:
    """Counts per key between two :meth:`take` calls, as rates."""

    counts: dict[str, int] = field(default_factory=dict)
    since_ns: int | None = None

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def take(self, now_ns: int) -> dict[str, float]:
        """Rates (per second) since the previous call; every key seen so far is reported
        (0 when it went quiet)."""
        out: dict[str, float] = {}
        if self.since_ns is not None and now_ns > self.since_ns:
            dt_s = (now_ns - self.since_ns) / 1e9
            out = {k: n / dt_s for k, n in self.counts.items()}
        self.counts = dict.fromkeys(self.counts, 0)
        self.since_ns = now_ns
        return out


@dataclass
class MotorTrace:
    """Every command value since the previous :meth:`take`, per actuator (at most
    ``max_samples`` each: beyond, the oldest go)."""

    max_samples: int = 10000
    pending: dict[str, deque[tuple[int, np.ndarray]]] = field(default_factory=dict)
    n_dropped: int = 0

    def add(self, cmd: MotorCommand) -> None:
        q = self.pending.get(cmd.actuator)
        if q is None:
            q = self.pending[cmd.actuator] = deque(maxlen=self.max_samples)
        elif len(q) == self.max_samples:
            self.n_dropped += 1
        q.append((cmd.t_ns, np.array(cmd.values, np.float64)))

    def take(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(actuator, t_ns (n,), values (n, channels))`` of every actuator with new
        commands (a change of the channel count starts a new block)."""
        out = []
        for actuator, q in sorted(self.pending.items()):
            while q:
                width = q[0][1].size
                block = []
                while q and q[0][1].size == width:
                    block.append(q.popleft())
                t_ns = np.array([t for t, _ in block], np.int64)
                out.append((actuator, t_ns, np.vstack([v for _, v in block])))
        return out


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def parse_track(value: Any) -> np.ndarray | None:
    """``track_xy`` as an (N, 2) float array, or None if it is not a list of >= 2 finite
    [x, y] pairs."""
    if not isinstance(value, list) or len(value) < 2:
        return None
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        return None
    return arr


@dataclass
class PoseTrack:
    """Ground truth of a simulated robot from ``status/sim`` Status metrics."""

    max_trail: int = 1000
    track_xy: np.ndarray | None = None
    track_changed: bool = False
    pose: tuple[float, float, float] | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    t_ns: int = 0
    trail: deque[tuple[float, float]] = field(init=False)
    fresh: bool = False
    n_updates: int = 0
    n_bad: int = 0

    def __post_init__(self) -> None:
        self.trail = deque(maxlen=self.max_trail)

    def add(self, status: Status) -> None:
        m = status.metrics
        track = m.get("track_xy")
        if track is not None:
            arr = parse_track(track)
            if arr is None:
                self.n_bad += 1
            elif self.track_xy is None or not np.array_equal(arr, self.track_xy):
                self.track_xy = arr
                self.track_changed = True
        xyz = [_finite(m.get(k)) for k in POSE_KEYS]
        if any(v is None for v in xyz):
            self.n_bad += 1
            return
        x, y, yaw = xyz
        self.pose = (x, y, yaw)  # type: ignore[assignment]
        self.trail.append((x, y))  # type: ignore[arg-type]
        self.scalars = {k: v for k in SIM_SCALARS if (v := _finite(m.get(k))) is not None}
        self.t_ns = status.t_ns
        self.n_updates += 1
        self.fresh = True


Bounds = tuple[float, float, float, float]


def world_bounds(track_xy: np.ndarray | None) -> Bounds | None:
    """(x0, x1, y0, y1) of the drawn track (y negated) with a 10 % margin."""
    if track_xy is None:
        return None
    lo, hi = track_xy.min(axis=0), track_xy.max(axis=0)
    pad = 0.1 * float(max(hi - lo)) + 1e-3
    return (lo[0] - pad, hi[0] + pad, -hi[1] - pad, -lo[1] + pad)


def stream_key(sensor: str, input_name: str) -> str:
    """How a sensor stream is named in the view (and in ``--camera``): ``sensor/input``."""
    return f"{sensor}/{input_name}"


@dataclass
class ViewState:
    """Everything the view shows, fed by :meth:`handle`. ``cameras`` maps a stream key
    to its layout (width, height); streams not listed there count only in the rates."""

    layouts: dict[str, tuple[int, int]]
    pose_source: str = "sim"
    max_trail: int = 1000
    cameras: dict[str, CameraState] = field(default_factory=dict)
    rates: RateMeter = field(default_factory=RateMeter)
    motors: MotorTrace = field(default_factory=MotorTrace)
    pose: PoseTrack = field(init=False)
    n_messages: int = 0
    ended: set[str] = field(default_factory=set)
    """sensors whose last word was the end of their stream (an ``ended`` heartbeat)"""

    def __post_init__(self) -> None:
        self.pose = PoseTrack(self.max_trail)

    def camera(self, key: str) -> CameraState | None:
        cam = self.cameras.get(key)
        if cam is None and key in self.layouts:
            cam = self.cameras[key] = CameraState(*self.layouts[key])
        return cam

    def handle(self, msg: object) -> None:
        self.n_messages += 1
        if isinstance(msg, EventBatch | Heartbeat):  # the end of a stream, or not
            if isinstance(msg, Heartbeat) and msg.state == HEARTBEAT_ENDED:
                self.ended.add(msg.sensor)
            else:
                self.ended.discard(msg.sensor)
        if isinstance(msg, EventBatch):
            key = stream_key(msg.sensor, msg.input)
            self.rates.add(key, msg.n_events)
            cam = self.camera(key)
            if cam is not None:
                cam.apply(msg)
        elif isinstance(msg, Heartbeat):
            for inp, totals in (msg.totals or {}).items():
                cam = self.camera(stream_key(msg.sensor, inp))
                if cam is not None and cam.n_batches:
                    cam.resync(totals, msg.t_ns)
        elif isinstance(msg, MotorCommand):
            self.rates.add(f"motor/{msg.actuator}", 1)
            self.motors.add(msg)
        elif isinstance(msg, Status) and msg.source == self.pose_source:
            self.pose.add(msg)
