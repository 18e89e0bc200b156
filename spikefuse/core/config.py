"""Config of the fusion daemon (``spikefuse core --config FILE``).

Example::

    graph: ../graphs/demo.yaml          # relative to this file
    inputs:                             # graph input -> sensor stream
      gyro:  {sensor: imu, timeout_s: 0.5}
      accel: {sensor: imu, timeout_s: 0.5, reorder_window_ms: 2}
    actuators:
      motors: {output: motors, clamp: [-1, 1], max_rate_per_s: 20, min_interval_ms: 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from spikefuse.backends.spinnaker.config import SpinnakerConfig
from spikefuse.config import StrictModel, load_model
from spikefuse.transport.config import SameHostConfig, SecurityConfig
from spikefuse.transport.endpoint import Endpoint

Name = str


class InputMap(StrictModel):
    """Where a graph input's events come from.

    ``sensor``: the sensor name of the EventBatches (topic ``sensor/<sensor>``);
    ``input``: the batch's ``input`` field (default: the graph input's name);
    ``endpoint``: the driver's publisher (default ``<run_dir>/<sensor>.sock``);
    ``reorder_window_ms``: 0 = process in arrival order, W > 0 = hold batches up to W ms and
    process them in timestamp order; ``timeout_s``: no events and no heartbeat for this long
    makes the input stale (status ``degraded`` and the ``on_stale`` fallback). An input whose
    sensor closed its stream (an ``ended`` heartbeat) is ended instead, never stale; it is
    no longer fresh either, so ``on_stale`` applies to it too (``safe``: its motors go to
    their safe values)."""

    sensor: str = Field(min_length=1, max_length=256)
    input: str | None = Field(default=None, min_length=1, max_length=256)
    endpoint: Endpoint | None = None
    reorder_window_ms: float = Field(0.0, ge=0.0, le=10_000.0)
    timeout_s: float = Field(0.5, gt=0.0, le=3600.0)
    on_stale: Literal["safe", "hold"] = "safe"


class ActuatorMap(StrictModel):
    """One actuator fed by an Output node (``output``), optionally a subset of its channels.

    Limits are applied in this order: ``clamp`` [lo, hi]; ``max_rate_per_s`` (slew limit,
    units per second; the command ramps in steps of ``slew_step_ms``); ``min_interval_ms``
    (changes closer than this are coalesced into one command at the end of the interval).
    ``safe_values`` (one value or one per channel) are commanded when an input it depends
    on is stale with ``on_stale: safe``."""

    output: str = Field(min_length=1)
    channels: list[int] | None = None
    clamp: tuple[float, float] | None = None
    max_rate_per_s: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    slew_step_ms: float = Field(5.0, gt=0.0, le=1000.0)
    min_interval_ms: float = Field(0.0, ge=0.0, le=60_000.0)
    safe_values: float | list[float] = 0.0

    @model_validator(mode="after")
    def _check(self) -> ActuatorMap:
        if self.clamp is not None and not self.clamp[0] <= self.clamp[1]:
            raise ValueError(f"clamp needs lo <= hi, found {list(self.clamp)}")
        if self.channels is not None and (not self.channels or min(self.channels) < 0):
            raise ValueError("channels must be a non-empty list of indices >= 0")
        return self


class CoreConfig(SameHostConfig):
    """The fusion daemon."""

    name: str = Field("core", min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    graph: Path
    endpoint: Endpoint | None = None
    """Where MotorCommand and Status are published (bound); default
    <run_dir>/<name>.sock over ``local_transport``"""
    security: SecurityConfig | None = None
    """CurveZMQ of every socket of the core: its inputs (who may send to it) and its output
    (docs/protocol.md, Security)."""
    inputs: dict[str, InputMap] = Field(min_length=1)
    actuators: dict[str, ActuatorMap] = Field(default_factory=dict)
    refresh_hz: float = Field(20.0, gt=0.0, le=10_000.0)
    status_period_s: float = Field(1.0, gt=0.0, le=3600.0)
    queue_policy: Literal["keep", "coalesce"] = "coalesce"
    """what a backlog held in the input queue becomes: every batch (``keep``) or one merged
    batch per stream (``coalesce``). A core on the compiled path queues nothing (each
    message is applied as it comes off the socket), so the policy acts only where the
    Python path serves (docs/core.md)."""
    max_queue: int = Field(1000, ge=1)
    hwm: int = Field(100_000, ge=1)
    wait_for_subscribers: int = Field(0, ge=0, le=10_000)
    """before subscribing to its inputs, wait until this many processes hold a
    subscription to the core's commands (its actuators, a recorder), up to
    ``wait_for_subscribers_timeout_s``: a driver that waits for the core (its own
    ``wait_for_subscribers``) then starts only once they all listen, so none of them misses
    the first commands (a lock-stepped world's recording holds every command)"""
    wait_for_subscribers_timeout_s: float = Field(5.0, ge=0.0, le=3600.0)
    duration_s: float | None = Field(default=None, gt=0.0)
    backend: Literal["engine", "spinnaker"] = "engine"
    spinnaker: SpinnakerConfig | None = None
    """machine and mapping settings of ``backend: spinnaker`` (docs/spinnaker.md)"""
    fast_path: bool = True
    """Handle each received EventBatch in the compiled per-message path where it applies
    (``docs/core.md``); false: every message on the Python path (same results, slower)."""
    clock: Literal["monotonic", "data"] = "monotonic"
    """``data``: the core's clock is the time of the data it has received (lock-step
    simulation): batches are held until a heartbeat vouches for their time, then applied
    event time by event time (one push per distinct time, in time order across streams),
    each serviced at its time; motor commands are stamped with it, and every heartbeat is
    answered with a command to each actuator stamped at the heartbeat's time ("everything
    up to here is answered")."""

    clock_offsets_ns: dict[str, int] = Field(default_factory=dict)
    """sensor -> ns added to its messages' times to put them on this host's monotonic
    clock: a multi-host launch sets it from its agents' measured clock offsets
    (docs/multihost.md) so cross-host latencies are right; unused with ``clock: data``"""

    def graph_path(self) -> Path:
        return self.resolve_path(self.graph)

    def resolved_endpoint(self) -> str:
        if self.endpoint is not None:
            return self.endpoint
        return self.local_endpoint(self.name)

    def sensor_endpoint(self, inp: InputMap) -> str:
        if inp.endpoint is not None:
            return inp.endpoint
        return self.local_endpoint(inp.sensor)


def load_core_config(path: str | Path, overrides: list[str] | None = None) -> CoreConfig:
    """Load a core config; relative paths in it are resolved against the file's directory."""
    cfg = load_model(CoreConfig, path, overrides)
    cfg.set_base_dir(Path(path).resolve().parent)
    return cfg
