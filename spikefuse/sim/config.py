"""Config of the simulated world (the ``world:`` section of the ``sim`` driver's config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from spikefuse.config import StrictModel
from spikefuse.sim.track import TRACKS

MAX_CAMERA_WIDTH = 320
MAX_CAMERA_HEIGHT = 240
"""The offscreen buffer of the model (``visual/global offwidth/offheight``)."""


class CameraSpec(StrictModel):
    """Forward grey camera: resolution, frame rate, vertical field of view."""

    width: int = Field(64, ge=8, le=MAX_CAMERA_WIDTH)
    height: int = Field(48, ge=8, le=MAX_CAMERA_HEIGHT)
    rate_hz: float = Field(60.0, gt=0.0, le=500.0)
    fovy_deg: float = Field(70.0, gt=10.0, lt=150.0)


class GyroSpec(StrictModel):
    rate_hz: float = Field(1000.0, gt=0.0, le=1000.0)
    noise_std_radps: float = Field(0.003, ge=0.0, le=1.0)
    bias_std_radps: float = Field(0.005, ge=0.0, le=1.0)
    """each axis' constant bias is drawn once per run from N(0, bias_std)"""


class AccelSpec(StrictModel):
    rate_hz: float = Field(200.0, gt=0.0, le=1000.0)
    noise_std_mps2: float = Field(0.03, ge=0.0, le=10.0)


class EncoderSpec(StrictModel):
    rate_hz: float = Field(100.0, gt=0.0, le=1000.0)


class Randomize(StrictModel):
    """Domain randomisation, drawn once per run from the seed: the start point anywhere
    on the line with a lateral offset and heading error; the light's brightness; the
    sensor noise levels (x 0.5 .. 2)."""

    start_pose: bool = False
    lighting: bool = False
    sensor_noise: bool = False
    max_lateral_m: float = Field(0.05, ge=0.0, le=0.3)
    max_yaw_rad: float = Field(0.2, ge=0.0, le=1.0)


class WorldConfig(StrictModel):
    """The world: track (by name), seed, renderer, sensors, wheel limits."""

    track: str = "oval"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    renderer: Literal["auto", "mujoco", "numpy"] = "auto"
    """auto: MuJoCo's renderer when OpenGL works (MUJOCO_GL=egl), else the NumPy floor
    renderer (with a note naming the Debian packages that give the full path)"""
    camera: CameraSpec = Field(default_factory=CameraSpec)
    gyro: GyroSpec = Field(default_factory=GyroSpec)
    accel: AccelSpec = Field(default_factory=AccelSpec)
    encoders: EncoderSpec = Field(default_factory=EncoderSpec)
    randomize: Randomize = Field(default_factory=Randomize)
    brightness: float = Field(1.0, gt=0.0, le=3.0)
    max_wheel_speed_radps: float = Field(20.0, gt=0.0, le=100.0)
    start_s_m: float = Field(0.0, ge=0.0)
    on_track_m: float = Field(0.3, gt=0.0, le=5.0)
    """progress (and so a lap) counts only while the robot is within this distance of the
    centre line: a robot that leaves the track and cuts across gains nothing"""
    """where on the line the robot starts (arc length from the track's start)"""

    @field_validator("track")
    @classmethod
    def _known_track(cls, v: str) -> str:
        if v not in TRACKS:
            raise ValueError(f"unknown track '{v}'; tracks: {', '.join(sorted(TRACKS))}")
        return v


__all__ = ["MAX_CAMERA_HEIGHT", "MAX_CAMERA_WIDTH", "CameraSpec", "Randomize", "WorldConfig"]
