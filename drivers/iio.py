"""Linux Industrial I/O (IIO) sysfs reading for 3-axis channels.

A device directory (``/sys/bus/iio/devices/iio:deviceN``) holds ``in_<type>_<axis>_raw``
and a shared ``in_<type>_scale`` (or per-axis ``in_<type>_<axis>_scale``), optionally
``in_<type>[_<axis>]_offset``; the value is ``(raw + offset) * scale`` in the IIO ABI units:
anglvel rad/s, accel m/s², magn gauss (converted here to µT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikefuse.errors import SensorError

AXES = ("x", "y", "z")
#: group name -> (IIO channel type, factor from the ABI unit to ours)
IIO_TYPES: dict[str, tuple[str, float]] = {
    "gyro": ("anglvel", 1.0),  # rad/s
    "accel": ("accel", 1.0),  # m/s²
    "mag": ("magn", 100.0),  # gauss -> µT
}


def _read_number(path: Path) -> float:
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise SensorError(f"{path}: not ASCII text") from None
    except OSError as exc:
        raise SensorError(f"{path}: {exc.strerror or exc}") from exc
    try:
        value = float(text.strip())
    except ValueError:
        raise SensorError(f"{path}: not a number: {text.strip()[:40]!r}") from None
    return value


def _attr(device: Path, ctype: str, axis: str, name: str, default: float | None) -> float:
    """Per-axis attribute if present, else the shared one, else ``default``."""
    for p in (device / f"in_{ctype}_{axis}_{name}", device / f"in_{ctype}_{name}"):
        if p.exists():
            return _read_number(p)
    if default is None:
        raise SensorError(f"{device}: neither in_{ctype}_{axis}_{name} nor in_{ctype}_{name}")
    return default


class IioChannel:
    """One 3-axis group of an IIO device. Scale and offset are read at construction (a
    restart after an error re-reads them); :meth:`read` reads the three raw values."""

    def __init__(self, device: Path, group: str):
        if group not in IIO_TYPES:
            raise SensorError(f"no IIO channel type for group '{group}'")
        if not device.is_dir():
            raise SensorError(f"IIO device {device} not found")
        ctype, unit = IIO_TYPES[group]
        self.raw_paths = [device / f"in_{ctype}_{a}_raw" for a in AXES]
        scale = np.array([_attr(device, ctype, a, "scale", None) for a in AXES])
        self.offset = np.array([_attr(device, ctype, a, "offset", 0.0) for a in AXES])
        self.factor = scale * unit

    def read(self, t_ns: int = 0) -> np.ndarray:
        raw = np.array([_read_number(p) for p in self.raw_paths])
        return (raw + self.offset) * self.factor
