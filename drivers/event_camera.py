"""Event-camera driver: recorded DVS events republished as EventBatches.

A DVS pixel already is a sigma-delta modulator on log intensity, so its events go out as
they are: ``channel = y*width + x``, ``count = +1`` (ON) / ``-1`` (OFF), per-event ``dt_ns``
offsets from the batch ``t_ns``. Events are cut into windows of ``slice_us`` and replayed
with the file's own timestamps (``speed`` x real time, or as fast as possible with
``realtime: false``).

Sources (``source.type``): ``aedat4`` (via the ``aedat`` package; the file's IMU becomes
the groups ``gyro`` (rad/s) and ``accel`` (m/s²), converted from deg/s and g) and ``evt3``
(Prophesee EVT 3.0 ``.raw``, decoded by :mod:`spikefuse.drivers.evt3`).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from spikefuse.config import StrictModel
from spikefuse.drivers.evt3 import iter_events, read_header
from spikefuse.errors import ConfigError, LogFileError
from spikefuse.sdk import DriverConfig, DriverContext, Events, Item, Sample, driver
from spikefuse.tables import G0_M_S2

DEG = math.pi / 180.0
MAX_REORDER_ITEMS = 100_000


class Aedat4Source(StrictModel):
    type: Literal["aedat4"]
    path: Path
    speed: float = Field(1.0, gt=0.0, le=1e6)
    realtime: bool = True


class Evt3Source(StrictModel):
    type: Literal["evt3"]
    path: Path
    width: int | None = Field(None, ge=1, le=2048)
    height: int | None = Field(None, ge=1, le=2048)
    speed: float = Field(1.0, gt=0.0, le=1e6)
    realtime: bool = True


class EventCameraConfig(DriverConfig):
    default_groups = {
        "events": {"scale": 5.0},  # one event = one contrast step (C ~ 0.2 log units)
        "gyro": {"scale": 500.0},
        "accel": {"scale": 50.0},
    }
    name: str = "event_camera"
    slice_us: float = Field(1000.0, gt=0.0, le=1e6)
    source: Annotated[Aedat4Source | Evt3Source, Field(discriminator="type")]


@driver("event_camera", EventCameraConfig)
def EVENT_CAMERA(cfg: EventCameraConfig, ctx: DriverContext) -> Iterator[Item]:
    """Event camera: AEDAT4 or EVT3 recordings (events, and the IMU of AEDAT4 files)."""
    src = cfg.source
    path = cfg.resolve_path(src.path)
    if not path.is_file():
        raise ConfigError("recording not found", f"source.path: {path}")
    slice_ns = round(cfg.slice_us * 1000)
    if isinstance(src, Aedat4Source):
        items = _aedat4_items(path, slice_ns, ctx)
    else:
        items = _evt3_items(path, src, slice_ns, ctx)
    yield from ctx.replay(items, speed=src.speed, realtime=src.realtime)


# --------------------------------------------------------------------------- events


def event_slices(
    t_us: np.ndarray, x: np.ndarray, y: np.ndarray, on: np.ndarray, width: int, slice_ns: int
) -> Iterator[Events]:
    """Events cut at multiples of ``slice_ns`` (absolute time), one :class:`Events` each."""
    if t_us.size == 0:
        return
    t_ns = t_us.astype(np.int64) * 1000
    ch = y.astype(np.int64) * width + x.astype(np.int64)
    counts = np.where(on.astype(bool), 1, -1).astype(np.int32)
    keys = t_ns // slice_ns
    cuts = np.flatnonzero(np.diff(keys)) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, t_ns.size], strict=True):
        t0 = int(t_ns[a:b].min())
        yield Events("events", t0, ch[a:b].astype(np.int32), counts[a:b], t_ns[a:b] - t0)


def _in_frame(
    x: np.ndarray, y: np.ndarray, width: int, height: int, ctx: DriverContext, where: str
) -> np.ndarray:
    ok = (x < width) & (y < height)
    n_bad = int(ok.size - np.count_nonzero(ok))
    if n_bad:
        ctx.bad_reading("events", f"{where}: {n_bad} events outside {width}x{height}")
    return ok


def _evt3_items(path: Path, src: Evt3Source, slice_ns: int, ctx: DriverContext) -> Iterator[Events]:
    header = read_header(path)
    width = src.width or header.width
    height = src.height or header.height
    if width is None or height is None:
        raise ConfigError(
            "the EVT3 header gives no geometry: set source.width and source.height",
            f"source.path: {path}",
        )
    for ev in iter_events(path):
        ok = _in_frame(ev["x"], ev["y"], width, height, ctx, str(path))
        ev = ev[ok]
        yield from event_slices(ev["t"], ev["x"], ev["y"], ev["p"], width, slice_ns)


# --------------------------------------------------------------------------- AEDAT4


def _aedat4_items(path: Path, slice_ns: int, ctx: DriverContext) -> Iterator[Item]:
    import aedat

    try:
        decoder = aedat.Decoder(str(path))
        streams = decoder.id_to_stream()
    except (OSError, RuntimeError, ValueError) as exc:
        raise LogFileError(f"{path}: not a readable AEDAT4 file: {exc}") from None
    ev_streams = {i: s for i, s in streams.items() if s.get("type") == "events"}
    if not ev_streams:
        raise LogFileError(f"{path}: no event stream in the file")
    geometry = {i: (int(s["width"]), int(s["height"])) for i, s in ev_streams.items()}
    kinds = {"events"} | (
        {"imus"} if any(s.get("type") == "imus" for s in streams.values()) else set()
    )
    return _reorder(_aedat4_packets(path, decoder, geometry, slice_ns, ctx), kinds)


def _aedat4_packets(
    path: Path,
    decoder: Iterable[dict],
    geometry: dict[int, tuple[int, int]],
    slice_ns: int,
    ctx: DriverContext,
) -> Iterator[tuple[str, list[Item]]]:
    try:
        for packet in decoder:
            if "events" in packet and packet["stream_id"] in geometry:
                width, height = geometry[packet["stream_id"]]
                ev = packet["events"]
                ok = _in_frame(ev["x"], ev["y"], width, height, ctx, str(path))
                ev = ev[ok]
                yield (
                    "events",
                    list(event_slices(ev["t"], ev["x"], ev["y"], ev["on"], width, slice_ns)),
                )
            elif "imus" in packet:
                yield "imus", list(_imu_samples(packet["imus"]))
    except (OSError, RuntimeError, ValueError) as exc:
        raise LogFileError(f"{path}: corrupt AEDAT4 data: {exc}") from None


def _imu_samples(imus: np.ndarray) -> Iterator[Sample]:
    gyro = np.stack([imus[f"gyroscope_{a}"] for a in "xyz"], axis=1).astype(np.float64) * DEG
    accel = (
        np.stack([imus[f"accelerometer_{a}"] for a in "xyz"], axis=1).astype(np.float64) * G0_M_S2
    )
    for i, t_us in enumerate(imus["t"].astype(np.int64).tolist()):
        yield Sample("gyro", t_us * 1000, gyro[i])
        yield Sample("accel", t_us * 1000, accel[i])


def _reorder(packets: Iterator[tuple[str, list[Item]]], kinds: set[str]) -> Iterator[Item]:
    """Merge the packets of several streams into time order: an item is released once
    every stream has reached its time (or the buffer holds MAX_REORDER_ITEMS)."""
    heap: list[tuple[int, int, Item]] = []
    latest: dict[str, int] = {}
    counter = itertools.count()
    for kind, items in packets:
        for item in items:
            heapq.heappush(heap, (item.t_ns, next(counter), item))
        if items:
            latest[kind] = max(latest.get(kind, items[-1].t_ns), items[-1].t_ns)
        watermark = min(latest.values()) if set(latest) >= kinds else None
        while heap and (
            (watermark is not None and heap[0][0] <= watermark) or len(heap) > MAX_REORDER_ITEMS
        ):
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]
