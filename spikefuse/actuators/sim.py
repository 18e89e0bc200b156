"""``sim`` actuator: the wheels of the simulated robot (``spikefuse driver sim``).

It subscribes to ``motor/<name>`` like every actuator, with the same deadman, and hands
what it applies to the world: each applied set of values is republished as a
``MotorCommand`` on ``motor/<name>_setpoints`` (bound at ``<run_dir>/<name>_setpoints.sock`` over
``local_transport`` unless ``setpoint_endpoint`` is given), where the sim driver takes it. A command from the
core keeps its ``t_ns`` and ``cause_t_ns`` (the sim driver measures latency and lock-steps
on them); safe values (start, deadman, stop) go out with ``cause_t_ns = -1``. The last
values are repeated every ``repeat_ms`` so the driver can tell a live actuator from a
dead one (it stops the wheels itself when the set-points stop)."""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from spikefuse.actuators.base import Actuator, ActuatorConfig, register_actuator
from spikefuse.protocol import MotorCommand
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher

SAFE_CAUSE = -1


class SimActuatorConfig(ActuatorConfig):
    name: str = Field(
        "wheels", min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
    )
    n_channels: int | None = Field(2, ge=2, le=2)
    """left and right wheel speed, rad/s (+ = forward)"""
    setpoint_endpoint: Endpoint | None = None
    repeat_ms: float = Field(100.0, gt=0.0, le=10_000.0)

    def resolved_setpoint_endpoint(self) -> str:
        if self.setpoint_endpoint is not None:
            return self.setpoint_endpoint
        return self.local_endpoint(f"{self.name}_setpoints")


@register_actuator("sim", SimActuatorConfig)
class SimActuator(Actuator):
    """Wheels of the simulated robot: republishes applied set-points to the sim driver."""

    def __init__(self, cfg: SimActuatorConfig):
        super().__init__(cfg)
        self.cfg: SimActuatorConfig = cfg
        self.topic_name = f"{cfg.name}_setpoints"
        self._pub = Publisher(
            cfg.resolved_setpoint_endpoint(),
            security=cfg.resolved_security(),
        )
        self._seq = 0
        self._last: MotorCommand | None = None
        self._repeat_ns = round(cfg.repeat_ms * 1e6)
        self._last_sent_ns = 0
        self.n_applied = 0
        self.n_safe = 0

    def apply(
        self,
        values: np.ndarray,
        *,
        safe: bool,
        seq: int,
        cause_t_ns: int,
        t_ns: int,
        refresh: bool = False,
    ) -> None:
        self.n_applied += 1
        self.n_safe += int(safe)
        cause = SAFE_CAUSE if safe else cause_t_ns
        cmd = self.command
        stamp = cmd.t_ns if cmd is not None and not safe else t_ns
        self._send(MotorCommand(self.topic_name, self._seq, stamp, cause, np.array(values)))

    def _send(self, msg: MotorCommand) -> None:
        self._seq += 1
        self._last = msg
        self._last_sent_ns = time.monotonic_ns()
        self._pub.send(msg)

    def service(self, now_ns: int) -> None:
        last = self._last
        if last is not None and now_ns - self._last_sent_ns >= self._repeat_ns:
            self._send(
                MotorCommand(self.topic_name, self._seq, last.t_ns, last.cause_t_ns, last.values)
            )

    def metrics(self) -> dict[str, object]:
        return {"n_applied": self.n_applied, "n_safe": self.n_safe}

    def close(self) -> None:
        self._pub.close()
