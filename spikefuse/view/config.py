"""Settings of the live view, and how they are derived from a launch file."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from spikefuse.config import StrictModel
from spikefuse.errors import ConfigError
from spikefuse.sdk.config import DEFAULT_RUN_DIR
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.endpoint import Endpoint, LocalTransport

_CAMERA_RE = re.compile(r"^([A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+)=(\d+)x(\d+)$")
LOOPBACK = "127.0.0.1"


class CameraLayout(StrictModel):
    """Pixel layout of a DVS stream: ``channel = y*width + x``."""

    width: int = Field(ge=1, le=8192)
    height: int = Field(ge=1, le=8192)


class ViewConfig(StrictModel):
    """The live view: where to listen (bus endpoints), where to serve (loopback by
    default), what to show and how often (every rate is an upper bound)."""

    name: str = Field("view", pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
    run_dir: Path = DEFAULT_RUN_DIR
    local_transport: LocalTransport = "zmq"
    """the transport of the view's own status socket (a launch's ``local_transport``)"""
    endpoints: list[Endpoint] = Field(min_length=1)
    sensor_endpoints: list[Endpoint] = Field(default_factory=list)
    """connected only once every source in ``wait_for_status`` has sent a Status (or after
    ``wait_for_status_timeout_s``): a driver waiting for its subscribers (the core) must
    not count the view instead"""
    wait_for_status: list[str] = Field(default_factory=list)
    wait_for_status_timeout_s: float = Field(30.0, ge=0.0, le=3600.0)
    cameras: dict[str, CameraLayout] = Field(default_factory=dict)
    """stream ``sensor/input`` -> pixel layout (streams not listed: rates only)"""
    bind: str = LOOPBACK
    web_port: int = Field(9090, ge=0, le=65535)
    """HTTP port of the web viewer (0: a free port)"""
    grpc_port: int = Field(9876, ge=0, le=65535)
    """port the browser fetches the data from (0: a free port)"""
    image_rate_hz: float = Field(15.0, gt=0.0, le=60.0)
    scalar_rate_hz: float = Field(10.0, gt=0.0, le=1000.0)
    """how often motor commands are sent on (each time: every command since the last)"""
    pose_rate_hz: float = Field(30.0, gt=0.0, le=1000.0)
    rates_period_s: float = Field(0.5, gt=0.0, le=60.0)
    status_period_s: float = Field(1.0, gt=0.0, le=3600.0)
    max_queue: int = Field(256, ge=1, le=1_000_000)
    """per stream: received messages waiting beyond this drop the oldest"""
    hwm: int = Field(100_000, ge=1)
    max_trail: int = Field(1000, ge=2, le=100_000)
    """newest robot positions drawn as its trail"""
    server_memory_limit: str = Field("256MiB", pattern=r"^\d+(\.\d+)?\s*(B|KiB|MiB|GiB|%)$")
    """data the viewer's server keeps for late browsers; the oldest goes first"""
    pose_source: str = "sim"
    security: SecurityConfig | None = None
    """CurveZMQ of a launch with ``security``: the view receives with the launch's shared
    receiving pair and publishes its status with the launcher's own pair"""
    nice: int = Field(10, ge=0, le=19)
    """added to the view's niceness (and its server's): the core gets the CPU first"""

    @field_validator("endpoints", "sensor_endpoints")
    @classmethod
    def _endpoints(cls, v: list[Endpoint]) -> list[Endpoint]:
        return list(dict.fromkeys(v))

    def status_endpoint(self) -> str:
        """Where the view publishes its own Status (``status/<name>``)."""
        return Endpoint.local(self.run_dir, self.name, self.local_transport)


def parse_camera(text: str) -> tuple[str, CameraLayout]:
    """``sensor/input=WIDTHxHEIGHT`` (the ``--camera`` option)."""
    m = _CAMERA_RE.match(text)
    if m is None:
        raise ConfigError(f"expected sensor/input=WIDTHxHEIGHT, found {text!r}", "--camera")
    try:
        return m.group(1), CameraLayout(width=int(m.group(2)), height=int(m.group(3)))
    except ValueError as exc:
        raise ConfigError(f"{text!r}: {exc}", "--camera") from None
