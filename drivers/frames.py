"""Frame sources for the camera driver: image files, OpenCV capture, a synthetic scene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.errors import ConfigError, LogFileError, SensorError

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


def open_video(source: int | str) -> Any:
    """An opened ``cv2.VideoCapture`` (device index or file). OpenCV is optional."""
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "the opencv camera source needs OpenCV: pip install 'spikefuse[camera]' "
            "(opencv-python-headless); or use source.type: images / synthetic",
            "source.type",
        ) from None
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        if isinstance(source, int):
            raise SensorError(f"camera device {source} cannot be opened")
        raise LogFileError(f"{source}: OpenCV cannot open this video")
    return cap


def video_frames(cap: Any, path: Path, period_ns: int) -> Iterator[tuple[int, np.ndarray, int]]:
    """(t_ns, image, interval_ns) of a video file, timed by its own timestamps (POS_MSEC)."""
    import cv2

    prev_ns: int | None = None
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return
            t_ns = round(cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
            if prev_ns is not None and t_ns <= prev_ns:
                t_ns = prev_ns + period_ns  # files without usable timestamps: nominal rate
            yield (
                t_ns,
                np.asarray(image)[:, :, ::-1],
                (t_ns - prev_ns if prev_ns is not None else period_ns),
            )
            prev_ns = t_ns
    finally:
        cap.release()


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
