"""What a driver's acquisition loop yields. The SDK encodes and batches them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Sample:
    """Values of one channel group at ``t_ns`` (SI units): sigma-delta encoded."""

    group: str
    t_ns: int
    values: np.ndarray


@dataclass(slots=True)
class Frame:
    """An image captured at ``t_ns``, ``interval_ns`` after the previous one: DVS encoded
    (events are timestamped inside ``(t_ns - interval_ns, t_ns]``)."""

    group: str
    t_ns: int
    image: np.ndarray
    interval_ns: int


@dataclass(slots=True)
class Events:
    """Change events that already are sigma-delta (an event camera): published as they are.
    ``dt_ns`` (optional, >= 0) are per-event offsets from ``t_ns``. ``n_values``: how many
    raw values they encode, when the driver encoded them itself (the pixels of a simulated
    camera's frame); 0 (default) when there are none (an event camera's time slice). The
    driver's Status reports it (``values_per_item``, the last nonzero one), so the core's
    summary can set events against values."""

    group: str
    t_ns: int
    channels: np.ndarray
    counts: np.ndarray
    dt_ns: np.ndarray | None = None
    n_values: int = 0


Item = Sample | Frame | Events
