"""Camera driver: frames become DVS events (log-intensity change, contrast threshold
``dvs.threshold``, optional refractory period, area downsampling to ``dvs.width`` x
``dvs.height``; ``channel = y*width + x``, count +1/-1, ``dt_ns`` spread across the frame
interval). The group ``events`` has scale ``1/threshold``; its ``rate_hz`` is the frame rate.

Sources (``source.type``): ``opencv`` (needs the optional ``opencv-python-headless``):
a video ``file``, timed by its own timestamps and frame rate (``speed``, ``realtime``,
``loop``), or a capture ``device`` index polled at ``groups.events.rate_hz`` (a failed grab
is retried with backoff, heartbeat ``degraded``, device reopened); ``images`` (a folder of
PNG/PGM/JPEG/NPY frames, in name order), ``synthetic`` (a bright bar moving over a textured background).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from spikefuse.config import StrictModel
from spikefuse.drivers.frames import (
    IMAGE_SUFFIXES,
    CaptureReader,
    MovingBar,
    open_device,
    read_image,
    video_file_frames,
)
from spikefuse.errors import ConfigError, LogFileError
from spikefuse.sdk import (
    DriverConfig,
    DriverContext,
    DvsSettings,
    Frame,
    default_source_type,
    driver,
)


class OpencvSource(StrictModel):
    type: Literal["opencv"]
    device: int | None = Field(None, ge=0)
    file: Path | None = None
    speed: float = Field(1.0, gt=0.0)
    realtime: bool = True
    loop: bool = False

    @model_validator(mode="after")
    def _one(self) -> OpencvSource:
        if (self.device is None) == (self.file is None):
            raise ValueError("give exactly one of device (an index) or file (a video)")
        return self


class ImagesSource(StrictModel):
    type: Literal["images"]
    folder: Path
    pattern: str = "*"
    speed: float = Field(1.0, gt=0.0)
    realtime: bool = True
    loop: bool = False


class SyntheticCameraSource(StrictModel):
    type: Literal["synthetic"] = "synthetic"
    seed: int = 0
    realtime: bool = True
    speed_px_s: float = Field(40.0, ge=-1e5, le=1e5)
    bar_width_px: float = Field(8.0, gt=0.0)
    render_scale: int = Field(2, ge=1, le=8)


class CameraConfig(DriverConfig):
    default_groups = {"events": {"scale": 5.0, "rate_hz": 30.0}}
    name: str = "camera"
    dvs: DvsSettings = Field(default_factory=DvsSettings)
    source: Annotated[
        OpencvSource | ImagesSource | SyntheticCameraSource, Field(discriminator="type")
    ] = Field(default_factory=SyntheticCameraSource)

    @model_validator(mode="before")
    @classmethod
    def _scale_from_threshold(cls, data: Any) -> Any:
        data = default_source_type(data, "synthetic")
        if not isinstance(data, dict):
            return data
        dvs = data.get("dvs") or {}
        thr = dvs.get("threshold", 0.2) if isinstance(dvs, dict) else 0.2
        groups = data.get("groups") or {}
        ev = groups.get("events") if isinstance(groups, dict) else None
        if not isinstance(thr, int | float) or thr <= 0 or not isinstance(ev, dict | None):
            return data  # field validation names the problem
        ev = dict(ev or {})
        scale = ev.get("scale")
        if scale is not None and abs(float(scale) * thr - 1.0) > 1e-9:
            raise ValueError(
                f"groups.events.scale is 1/dvs.threshold ({1 / thr:g}); found {scale} "
                "(set dvs.threshold instead)"
            )
        ev["scale"] = 1.0 / thr
        return {**data, "groups": {**groups, "events": ev}}

    def frame_interval_ns(self) -> int:
        rate_hz = self.groups["events"].rate_hz
        if rate_hz is None:
            raise ConfigError("groups.events.rate_hz (the frame rate) is required", "groups")
        return round(1e9 / rate_hz)


@driver("camera", CameraConfig)
def CAMERA(cfg: CameraConfig, ctx: DriverContext) -> Iterator[Frame]:
    """Camera: DVS emulation on frames from OpenCV, an image folder or a synthetic scene."""
    src = cfg.source
    period_ns = cfg.frame_interval_ns()
    if isinstance(src, SyntheticCameraSource):
        scene = MovingBar(cfg.dvs.width, cfg.dvs.height, src)
        for t_ns in ctx.ticks("events", realtime=src.realtime):
            yield Frame("events", t_ns, scene.render((t_ns - ctx.start_ns) / 1e9), period_ns)
    elif isinstance(src, ImagesSource):
        yield from ctx.replay(
            _folder_frames(cfg, src, ctx, period_ns), speed=src.speed, realtime=src.realtime
        )
    elif src.device is not None:
        index = src.device
        with CaptureReader(lambda: open_device(index), f"camera device {index}") as reader:
            yield from capture_frames(reader, ctx, period_ns)
    else:
        path = cfg.resolve_path(src.file)  # type: ignore[arg-type]
        if not path.is_file():
            raise ConfigError("video file not found", f"source.file: {path}")
        frames = video_file_frames(
            path, period_ns, lambda detail: ctx.bad_reading("events", detail), loop=src.loop
        )
        yield from ctx.replay(
            (Frame("events", t, img, dt) for t, img, dt in frames),
            speed=src.speed,
            realtime=src.realtime,
        )


def capture_frames(
    reader: Callable[[int], np.ndarray], ctx: DriverContext, period_ns: int
) -> Iterator[Frame]:
    """Frames of a live capture polled at ``groups.events.rate_hz`` (``ctx.poll``: a read
    raising ``SensorError`` is retried with backoff, the heartbeat degraded meanwhile);
    each frame's interval is the time since the previous frame."""
    prev_ns: int | None = None
    for sample in ctx.poll({"events": reader}):
        t_ns = sample.t_ns
        yield Frame(
            "events", t_ns, sample.values, t_ns - prev_ns if prev_ns is not None else period_ns
        )
        prev_ns = t_ns


def _folder_frames(
    cfg: CameraConfig, src: ImagesSource, ctx: DriverContext, period_ns: int
) -> Iterator[Frame]:
    folder = cfg.resolve_path(src.folder)
    if not folder.is_dir():
        raise ConfigError("image folder not found", f"source.folder: {folder}")
    files = sorted(p for p in folder.glob(src.pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) matching '{src.pattern}'",
            f"source.folder: {folder}",
        )
    k = 0
    prev_ns = -period_ns
    while True:
        for path in files:
            t_ns = k * period_ns
            k += 1
            try:
                image = read_image(path)
            except LogFileError as exc:
                ctx.bad_reading("events", str(exc))
                continue
            yield Frame("events", t_ns, image, t_ns - prev_ns)
            prev_ns = t_ns
        if not src.loop:
            return
