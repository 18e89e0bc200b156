"""Frame sources for the camera driver: image files, OpenCV capture, a synthetic scene."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.errors import ConfigError, LogFileError, SensorError

READ_TIMEOUT_MS = 1000
"""A capture device's grab fails after this long without a frame (so a stop or a stalled
camera is noticed within about a second)."""

IMAGE_SUFFIXES = frozenset(
    {".png", ".pgm", ".ppm", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"}
)


def read_image(path: Path) -> np.ndarray:
    """An image file as a numpy array (PNG/PGM/JPEG/... via Pillow, NPY via numpy).
    Unreadable or corrupt files raise :class:`LogFileError` naming the file."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise LogFileError(f"{path}: not a readable .npy array: {exc}") from None
        if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
            raise LogFileError(
                f"{path}: expected a numeric (H, W[, C]) array, found {arr.dtype} {arr.shape}"
            )
        return arr
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "I;16", "I", "F", "RGB", "RGBA"):
                im = im.convert("RGB")
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise LogFileError(f"{path}: not a readable image: {exc}") from None


def _cv2() -> Any:
    """The ``cv2`` module; OpenCV is an optional dependency (imported lazily)."""
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "the opencv camera source needs OpenCV: pip install 'spikefuse[camera]' "
            "(opencv-python-headless); or use source.type: images / synthetic",
            "source.type",
        ) from None
    return cv2


def open_video(source: int | str, where: str) -> Any:
    """An opened ``cv2.VideoCapture`` of a device index or a file; :class:`ConfigError`
    naming ``where`` if OpenCV cannot open it. OpenCV's own warnings are silenced during
    the attempt (the error says what failed)."""
    cv2 = _cv2()
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        cap = cv2.VideoCapture(source)
        opened = cap.isOpened()
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not opened:
        cap.release()
        if isinstance(source, int):
            raise ConfigError(f"camera device {source} cannot be opened{_devices_hint()}", where)
        raise ConfigError("OpenCV cannot open this file as a video", where)
    return cap


def _devices_hint() -> str:
    if not sys.platform.startswith("linux"):
        return ""
    found = sorted(Path("/dev").glob("video*"))
    return f" (video devices: {', '.join(map(str, found)) if found else 'none'})"


def open_device(index: int) -> Any:
    """An opened capture device (``/dev/video<index>`` on Linux): one frame buffered, and
    a grab that waits ``READ_TIMEOUT_MS`` for a frame fails (backends that support it)."""
    cv2 = _cv2()
    cap = open_video(index, f"source.device: {index}")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a stale queue
    cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)  # a stalled camera: degraded
    return cap


def _rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR(A) frames as RGB(A); grey frames as they are."""
    return image[:, :, 2::-1] if image.ndim == 3 and image.shape[2] >= 3 else image


def _nominal_period_ns(cap: Any, fallback_ns: int) -> int:
    fps = cap.get(_cv2().CAP_PROP_FPS)
    return round(1e9 / fps) if math.isfinite(fps) and 0.1 <= fps <= 1e5 else fallback_ns


def video_file_frames(
    path: Path, fallback_period_ns: int, bad: Callable[[str], None], *, loop: bool = False
) -> Iterator[tuple[int, np.ndarray, int]]:
    """``(t_ns, RGB image, interval_ns)`` of a video file, timed by its own timestamps
    (``CAP_PROP_POS_MSEC``; frames without a usable timestamp are one nominal period,
    ``1/CAP_PROP_FPS`` or ``fallback_period_ns``, after the previous one). With ``loop``
    the file restarts one period after its last frame, time running on.

    A file OpenCV cannot open or decode a single frame of is a :class:`ConfigError`
    naming ``source.file``; a file that ends before the frame count in its header
    (truncated or corrupt) is reported through ``bad(detail)`` and ends the stream, as does
    a later pass of a loop that cannot be opened any more."""
    where = f"source.file: {path}"
    prev_ns: int | None = None
    offset_ns = 0
    n_pass = 0
    while True:
        try:
            cap = open_video(str(path), where)
        except ConfigError as exc:
            if n_pass == 0:
                raise
            bad(f"{path}: cannot reopen the video for the next loop: {exc}")
            return
        n_pass += 1
        period_ns = _nominal_period_ns(cap, fallback_period_ns)
        n_read = 0
        try:
            n_declared = cap.get(_cv2().CAP_PROP_FRAME_COUNT)
            for pos_ms, image in _decoded(cap):
                t_ns = offset_ns + round(pos_ms * 1e6)
                if prev_ns is not None and t_ns <= prev_ns:
                    t_ns = prev_ns + period_ns
                yield t_ns, _rgb(image), t_ns - prev_ns if prev_ns is not None else period_ns
                prev_ns = t_ns
                n_read += 1
        finally:
            cap.release()
        if n_read == 0:
            if n_pass == 1:
                raise ConfigError(
                    "OpenCV opens this file but decodes no frame of it (not a video, or a "
                    "codec this OpenCV build lacks)",
                    where,
                )
            bad(f"{path}: no frame decoded on loop pass {n_pass}")
            return
        if 0 < n_read < n_declared < 1e12:
            bad(
                f"{path}: the video ends after {n_read} of the {n_declared:.0f} frames its "
                "header declares (truncated or corrupt)"
            )
        if not loop or prev_ns is None:
            return
        offset_ns = prev_ns + period_ns


def _decoded(cap: Any) -> Iterator[tuple[float, np.ndarray]]:
    """(POS_MSEC, image) of each frame until a read fails (the end, or a broken file)."""
    cv2 = _cv2()
    while True:
        try:
            ok, image = cap.read()
        except cv2.error:
            return
        if not ok or image is None:
            return
        yield cap.get(cv2.CAP_PROP_POS_MSEC), np.asarray(image)


class CaptureReader:
    """A polled reader (``ctx.poll``) of a live capture: ``open_capture()`` is called at
    construction (its :class:`ConfigError` is a config error at start) and again after a
    failed grab. A failed grab or reopen raises :class:`SensorError`, so the SDK retries
    with backoff and the heartbeat says ``degraded`` until frames come again. Returns grey
    intensity in [0, 1] (float, as ``ctx.poll`` passes values on as float64)."""

    def __init__(self, open_capture: Callable[[], Any], name: str):
        self._open_capture = open_capture
        self.name = name
        self.cap: Any = open_capture()
        self.n_reopens = 0

    def __call__(self, t_ns: int) -> np.ndarray:
        cv2 = _cv2()
        if self.cap is None:
            try:
                self.cap = self._open_capture()
            except ConfigError as exc:
                raise SensorError(f"{self.name}: cannot reopen: {exc}") from None
            self.n_reopens += 1
        try:
            ok, image = self.cap.read()
        except cv2.error as exc:
            self.close()
            raise SensorError(f"{self.name}: frame grab failed: {exc}") from None
        if not ok or image is None:
            self.close()
            raise SensorError(f"{self.name}: frame grab failed")
        return unit_gray(image)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unit_gray(image: np.ndarray) -> np.ndarray:
    """A BGR(A) or grey OpenCV frame as float64 grey intensity in [0, 1] (Rec. 601 luma,
    the DVS encoder's weights)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] >= 3:
        grey = image[:, :, :3].astype(np.float64) @ np.array([0.114, 0.587, 0.299])
    elif image.ndim == 3:
        grey = image[:, :, 0].astype(np.float64)
    else:
        grey = image.astype(np.float64)
    if np.issubdtype(image.dtype, np.integer):
        grey *= 1.0 / np.iinfo(image.dtype).max
    return grey


class MovingBar:
    """A bright vertical bar moving horizontally (wrapping) over a dark background with a
    faint static vertical texture. Rendered at ``render_scale`` x the output resolution
    and area-averaged by the DVS encoder: sub-pixel motion gives graded intensities."""

    def __init__(self, width: int, height: int, src: Any):
        self.scale = int(src.render_scale)
        self.w = width * self.scale
        self.h = height * self.scale
        rng = np.random.default_rng(src.seed)
        self.texture = 0.05 + 0.1 * rng.random(self.w)  # column texture, static
        self.x0 = rng.uniform(0, self.w)
        self.v = src.speed_px_s * self.scale
        self.bar = src.bar_width_px * self.scale

    def render(self, t_s: float) -> np.ndarray:
        left = (self.x0 + self.v * t_s) % self.w
        x = np.arange(self.w) + 0.5
        in_bar = ((x - left) % self.w) < self.bar
        row = np.where(in_bar, 0.9, self.texture)
        return np.broadcast_to(row, (self.h, self.w))
