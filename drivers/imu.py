"""IMU driver: channel groups gyro (rad/s), accel (m/s²) and mag (µT), each with its own
rate and scale (multi-rate is the point: gyro 1 kHz, accel 200 Hz, mag 20 Hz by default).

Sources (``source.type``):

* ``iio``: Linux IIO sysfs device, each group polled at its ``rate_hz``;
* ``table``: a CSV/NPZ recording (``spikefuse.tables``: a preset or a column mapping),
  replayed with the file's own timestamps at ``speed`` x real time, or as fast as possible
  with ``realtime: false``; ``decimate: true`` subsamples each group to its ``rate_hz``;
* ``synthetic``: deterministic seeded multi-rate motion (``realtime: false`` = no waiting).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from spikefuse.config import StrictModel
from spikefuse.drivers.iio import IioChannel
from spikefuse.drivers.motion import SyntheticMotion
from spikefuse.errors import ConfigError
from spikefuse.sdk import DriverConfig, DriverContext, Sample, default_source_type, driver
from spikefuse.tables import PRESETS, Table, TableMapping, load_mapping, load_table

GROUPS = ("gyro", "accel", "mag")


class IioSource(StrictModel):
    type: Literal["iio"]
    device: Path


class TableSource(StrictModel):
    type: Literal["table"]
    path: Path
    preset: str | None = None
    mapping: TableMapping | None = None
    mapping_file: Path | None = None
    speed: float = Field(1.0, gt=0.0, le=1e6)
    realtime: bool = True
    decimate: bool = False


class SyntheticSource(StrictModel):
    type: Literal["synthetic"] = "synthetic"
    seed: int = 0
    realtime: bool = True
    amplitude_rad: float = Field(0.6, ge=0.0, le=3.0)
    max_frequency_hz: float = Field(0.5, gt=0.0, le=100.0)
    noise: dict[Literal["gyro", "accel", "mag"], float] = Field(
        default_factory=lambda: {"gyro": 0.002, "accel": 0.02, "mag": 0.2}
    )


class ImuConfig(DriverConfig):
    # Default quanta are noise-matched: one count (0.05 rad/s, 0.5 m/s², 1 µT) is about 4x the
    # per-axis sample-to-sample noise of a typical MEMS IMU (BROAD: 0.011 rad/s, 0.085 m/s²,
    # 0.24 µT), so static readings send nothing and the stream stays below 0.3x the raw sample
    # rate (docs/benchmarks.md, Bus). Finer scales are one `groups.<g>.scale` away.
    default_groups = {
        "gyro": {"scale": 20.0, "rate_hz": 1000.0},  # 1 count = 0.05 rad/s
        "accel": {"scale": 2.0, "rate_hz": 200.0},  # 1 count = 0.5 m/s²
        "mag": {"scale": 1.0, "rate_hz": 20.0},  # 1 count = 1 µT
    }
    name: str = "imu"
    source: Annotated[IioSource | TableSource | SyntheticSource, Field(discriminator="type")] = (
        Field(default_factory=SyntheticSource)
    )

    @model_validator(mode="before")
    @classmethod
    def _default_source_type(cls, data: Any) -> Any:
        return default_source_type(data, "synthetic")


@driver("imu", ImuConfig)
def IMU(cfg: ImuConfig, ctx: DriverContext) -> Iterator[Sample]:
    """IMU: gyro/accel/mag from IIO sysfs, a recorded table, or synthetic motion."""
    src = cfg.source
    if isinstance(src, IioSource):
        device = cfg.resolve_path(src.device)
        channels = {g: IioChannel(device, g) for g in cfg.enabled_groups()}
        yield from ctx.poll({g: ch.read for g, ch in channels.items()})
    elif isinstance(src, TableSource):
        table = _load(cfg, src)
        yield from ctx.replay(
            _table_samples(cfg, src, table), speed=src.speed, realtime=src.realtime
        )
    else:
        motion = SyntheticMotion(src.seed, src.amplitude_rad, src.max_frequency_hz, dict(src.noise))
        readers = {g: _synthetic_reader(motion, g, ctx.start_ns) for g in cfg.enabled_groups()}
        yield from ctx.poll(readers, realtime=src.realtime)


def _synthetic_reader(motion: SyntheticMotion, group: str, start_ns: int):
    return lambda t_ns: motion.sample(group, t_ns - start_ns)


def _load(cfg: ImuConfig, src: TableSource) -> Table:
    path = cfg.resolve_path(src.path)
    if not path.is_file():
        raise ConfigError("table file not found", f"source.path: {path}")
    n_given = sum(x is not None for x in (src.preset, src.mapping, src.mapping_file))
    if n_given > 1:
        raise ConfigError("give at most one of preset, mapping, mapping_file", "source")
    mapping = src.mapping
    if src.mapping_file is not None:
        mapping = load_mapping(cfg.resolve_path(src.mapping_file))
    if src.preset is not None and src.preset not in PRESETS:
        raise ConfigError(f"unknown preset '{src.preset}' (known: {sorted(PRESETS)})", "source")
    table = load_table(path, mapping=mapping, preset=src.preset)
    missing = [g for g in cfg.enabled_groups() if g not in table.groups]
    if missing:
        raise ConfigError(
            f"the table has no group(s) {missing} (it has {sorted(table.groups)}); "
            "disable them with groups.<name>.enabled=false",
            f"source.path: {path}",
        )
    return table


def _table_samples(cfg: ImuConfig, src: TableSource, table: Table) -> Iterator[Sample]:
    groups = cfg.enabled_groups()
    next_ns = dict.fromkeys(groups, int(table.t_ns[0]))
    period_ns = {
        g: round(1e9 / cfg.groups[g].rate_hz) if src.decimate and cfg.groups[g].rate_hz else 0
        for g in groups
    }
    arrays = {g: table.groups[g] for g in groups}
    for i, t in enumerate(table.t_ns.tolist()):
        for g in groups:
            if t >= next_ns[g]:
                if period_ns[g]:
                    next_ns[g] += max(1, (t - next_ns[g]) // period_ns[g] + 1) * period_ns[g]
                yield Sample(g, t, np.array(arrays[g][i]))
