"""The ``--map`` config of ``spikefuse import`` (YAML, loaded through ``load_model``)::

    format: ros              # ros | ulog | aedat | evt3 | table | auto (from the file name)
    streams:
      - topic: /imu/data     # ROS topic | ULog message | aedat: imu/events | evt3: events
                             # | table: table
        sensor: imu          # -> bus topic sensor/imu
        groups:              # group -> graph input and scale (counts per unit)
          gyro:  {input: gyro, scale: 200.0}
          accel: {input: accel, scale: 20.0}

Groups per source message: sensor_msgs/Imu gyro, accel, orientation;
nav_msgs/Odometry position, velocity, angular_velocity; sensor_msgs/NavSatFix fix
(lat deg, lon deg, alt m); sensor_msgs/Image frame (DVS emulation, ``dvs:``);
ULog sensor_combined gyro, accel, mag (µT); vehicle_attitude q; actuator_outputs output;
AEDAT imu: gyro, accel (SI); AEDAT and EVT3 events: events; tables: their mapping's groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from spikefuse.config import StrictModel, load_model

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$"

Format = Literal["auto", "ros", "ulog", "aedat", "evt3", "table"]


class GroupMap(StrictModel):
    """Graph input (default: the group's name) and scale (counts per unit) of a group."""

    input: str | None = Field(default=None, min_length=1, max_length=256)
    scale: float = Field(gt=0.0, allow_inf_nan=False)
    enabled: bool = True


class DvsMap(StrictModel):
    """DVS emulation of an image stream (same settings as a camera driver)."""

    width: int = Field(64, ge=1, le=8192)
    height: int = Field(48, ge=1, le=8192)
    threshold: float = Field(0.2, gt=0.0, le=10.0, allow_inf_nan=False)
    refractory_us: float = Field(0.0, ge=0.0, le=1e7)
    eps: float = Field(1e-3, gt=0.0, le=1.0)


class StreamMap(StrictModel):
    topic: str = Field(min_length=1)
    sensor: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    groups: dict[str, GroupMap] = Field(min_length=1)
    dvs: DvsMap | None = None
    window_ms: float = Field(1.0, gt=0.0, le=60_000.0)
    """native events: one batch per window"""
    multi_id: int = Field(0, ge=0)
    """ULog: which instance of the message"""
    width: int | None = Field(default=None, ge=1, le=65536)
    """EVT3: sensor width in pixels when the file's header gives none"""
    height: int | None = Field(default=None, ge=1, le=65536)
    """EVT3: sensor height in pixels when the file's header gives none"""


class ImportMap(StrictModel):
    format: Format = "auto"
    table: str | None = None
    """tables: a preset name (broad/vqf/xio) or a mapping YAML path (relative to this file)"""
    streams: list[StreamMap] = Field(min_length=1)
    _source: str = PrivateAttr(default="<import map>")

    @property
    def source_name(self) -> str:
        """The map file (for error messages)."""
        return self._source

    @model_validator(mode="after")
    def _unique(self) -> ImportMap:
        seen: set[tuple[str, str]] = set()
        for s in self.streams:
            for g in s.groups:
                key = (s.sensor, s.groups[g].input or g)
                if key in seen:
                    raise ValueError(f"sensor {s.sensor!r} feeds input {key[1]!r} twice")
                seen.add(key)
        return self


def load_import_map(path: str | Path, overrides: list[str] | None = None) -> ImportMap:
    m = load_model(ImportMap, path, overrides)
    m._source = str(path)
    if m.table is not None and (m.table.endswith(".yaml") or m.table.endswith(".yml")):
        m.table = str((Path(path).parent / m.table).resolve())
    return m
