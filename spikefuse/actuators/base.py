"""Actuator processes: ``spikefuse actuator KIND --config FILE``.

An actuator subscribes to ``motor/<name>`` on the core's endpoint and applies each
MotorCommand. **Deadman**: when no command arrives within ``deadman_ms`` (default 100 ms)
it applies its ``safe_values`` and reports it (log line, counter, status); the next command
re-arms it. It also starts at its safe values. Kinds are registered with
:func:`register_actuator` (``console`` and ``serial`` ship here; a ``sim`` kind plugs in the
same way).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from pydantic import Field

from spikefuse.config import apply_overrides, load_yaml, validate_data
from spikefuse.core.hot import motor_reader
from spikefuse.core.stats import LatencyHistogram
from spikefuse.errors import ConfigError
from spikefuse.protocol import MotorCommand, Status, stream_of
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.config import SameHostConfig, SecurityConfig
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber, SubscriberStats

log = logging.getLogger(__name__)

DEADMAN_LAST_LOOK_S = 0.005
"""When the deadman is due, how long the actuator still waits for a command that is on its
way before applying the safe values."""

DEADMAN_LOG_EVERY_NS = 10_000_000_000
"""A deadman trip is logged at most this often (the first at once); the trips in between
are counted (summary, status) and named in the next line: a lock-stepped simulator's
actuator, idle between runs of its world, trips every few hundred ms."""

MAX_PER_WAKE = 1000
"""Commands one wake applies one by one as they are read; a longer backlog's rest goes
through the subscriber's queue (``max_queue`` newest kept, the older dropped and counted)."""

DRAIN_NS = 100_000_000
"""Longest a stopping actuator counts commands still on their way (after its safe values)."""


class ActuatorConfig(SameHostConfig):
    """Common fields of every actuator kind."""

    name: str = Field(
        "motors", min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
    )
    core: str = Field("core", min_length=1, max_length=128)
    endpoint: Endpoint | None = None
    """The core's publisher; default <run_dir>/<core>.sock over ``local_transport``"""
    n_channels: int | None = Field(default=None, ge=1, le=4096)
    safe_values: float | list[float] = 0.0
    deadman_ms: float = Field(100.0, gt=0.0, le=60_000.0)
    status_endpoint: Endpoint | None = None
    security: SecurityConfig | None = None
    """CurveZMQ for the command input (who may command) and the status output
    (docs/protocol.md, Security)."""
    status_period_s: float = Field(1.0, gt=0.0, le=3600.0)
    duration_s: float | None = Field(default=None, gt=0.0)

    def open_csv(self, csv: str | Path) -> TextIO:
        """Open the CSV log ``csv`` (relative to the config file) line-buffered for writing."""
        path = self.resolve_path(csv)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("w", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise ConfigError(f"cannot open CSV output {path}: {exc}", "csv") from None

    def resolved_endpoint(self) -> str:
        if self.endpoint is not None:
            return self.endpoint
        return self.local_endpoint(self.core)

    def safe_array(self, n: int) -> np.ndarray:
        safe = np.asarray(self.safe_values, np.float64)
        if safe.ndim == 0:
            return np.full(n, float(safe))
        if safe.shape != (n,):
            raise ConfigError(f"safe_values has {safe.size} values, expected {n}", "safe_values")
        return safe.copy()


class Actuator:
    """Base of every kind: ``apply`` one set of values; ``service`` for periodic work
    (e.g. reading device replies); ``close``. ``refresh``: the command repeats the cause
    of the previous one (the core's periodic refresh of an unchanged output), so
    ``t_ns - cause_t_ns`` is the age of that input, not a latency."""

    def __init__(self, cfg: ActuatorConfig):
        self.cfg = cfg
        self.command: MotorCommand | None = None
        """the command being applied (set by the runner before ``apply``; None for safe values)"""

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
        raise NotImplementedError

    def service(self, now_ns: int) -> None:
        return None

    def metrics(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class ActuatorKind:
    kind: str
    config: type[ActuatorConfig]
    factory: Callable[[ActuatorConfig], Actuator]
    description: str = ""


_KINDS: dict[str, ActuatorKind] = {}


def register_actuator(kind: str, config: type[ActuatorConfig], description: str = ""):
    """Class decorator: ``@register_actuator("sim", SimConfig)`` on an Actuator subclass."""

    def wrap(cls: type[Actuator]) -> type[Actuator]:
        _KINDS[kind] = ActuatorKind(
            kind, config, cls, description or (cls.__doc__ or kind).strip().splitlines()[0]
        )
        return cls

    return wrap


def actuator_kinds() -> dict[str, ActuatorKind]:
    import spikefuse.actuators.console  # noqa: F401  (registers)
    import spikefuse.actuators.gimbal  # noqa: F401
    import spikefuse.actuators.serial_line  # noqa: F401
    import spikefuse.actuators.sim  # noqa: F401

    return dict(_KINDS)


def resolve_actuator(kind: str) -> ActuatorKind:
    kinds = actuator_kinds()
    if kind not in kinds:
        raise ConfigError(f"unknown actuator kind '{kind}'; kinds: {', '.join(sorted(kinds))}")
    return kinds[kind]


def load_actuator_config(
    spec: ActuatorKind, path: str | Path | None, overrides: list[str] | None = None
) -> ActuatorConfig:
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data if data is not None else {}, overrides)
    cfg = validate_data(spec.config, data, str(path) if path is not None else "--set")
    cfg.set_base_dir(Path(path).resolve().parent if path is not None else Path.cwd())
    return cfg


# --------------------------------------------------------------------------- the loop


class ActuatorRunner:
    """Receives commands, applies them, runs the deadman, reports status."""

    def __init__(self, cfg: ActuatorConfig, actuator: Actuator):
        self.cfg = cfg
        self.actuator = actuator
        self.deadman_ns = round(cfg.deadman_ms * 1e6)
        self.n_commands = 0
        self.first_seq: int | None = None
        """seq of the first command received: the core's commands before it never came
        (published while this actuator was not yet subscribed)"""
        self.n_bad = 0
        self.n_after_stop = 0
        self.n_deadman = 0
        self._deadman_logged_ns: int | None = None
        self._deadman_logged_n = 0
        self._quiet_trip = False
        self.tripped = False
        self.last_cmd_ns = 0
        self.max_gap_ns = 0
        """longest time between two commands while armed (how close to the deadman)"""
        self.last_cause_ns: int | None = None
        self.latency = LatencyHistogram()
        self.n_channels = cfg.n_channels
        self.safe = cfg.safe_array(cfg.n_channels) if cfg.n_channels else None
        self._status_seq = 0

    def start(self, now_ns: int) -> None:
        self.tripped = True
        self.last_cmd_ns = now_ns
        if self.safe is not None:
            self.actuator.apply(self.safe, safe=True, seq=-1, cause_t_ns=now_ns, t_ns=now_ns)

    def on_command(self, msg: MotorCommand, now_ns: int) -> None:
        if self.first_seq is None:
            self.first_seq = msg.seq
        if self.n_channels is None:
            self.n_channels = msg.values.size
            self.safe = self.cfg.safe_array(self.n_channels)
        if msg.values.size != self.n_channels:
            self.n_bad += 1
            log.warning(
                "%s: command with %d values, expected %d: dropped",
                self.cfg.name,
                msg.values.size,
                self.n_channels,
            )
            return
        self.n_commands += 1
        if not self.tripped:
            self.max_gap_ns = max(self.max_gap_ns, now_ns - self.last_cmd_ns)
        self.last_cmd_ns = now_ns
        refresh = msg.cause_t_ns == self.last_cause_ns  # refreshes repeat the cause
        if not refresh:  # (a refresh's t - cause is the input's age, not a latency)
            self.last_cause_ns = msg.cause_t_ns
            self.latency.add(now_ns - msg.cause_t_ns)
        if self.tripped:
            self.tripped = False
            if not self._quiet_trip:
                log.info(
                    "%s: commands flowing (deadman armed, %g ms)",
                    self.cfg.name,
                    self.cfg.deadman_ms,
                )
        self.actuator.command = msg
        self.actuator.apply(
            msg.values,
            safe=False,
            seq=msg.seq,
            cause_t_ns=msg.cause_t_ns,
            t_ns=now_ns,
            refresh=refresh,
        )

    def summary(self, bus: SubscriberStats) -> str:
        """Closing report: every command of the core's sequence accounted for (missed before
        subscribing, lost on the way, dropped from a full queue, bad, applied)."""
        missed = self.first_seq or 0
        lost = bus.seq_gaps.get(f"motor/{self.cfg.name}", 0)
        return (
            f"actuator '{self.cfg.name}': {self.n_commands} commands applied, {self.n_bad} bad, "
            f"{bus.n_dropped} dropped from a full queue, {lost} lost on the way (seq gaps), "
            f"{missed} sent before it subscribed, {self.n_after_stop} arrived after it stopped "
            f"(not applied); {self.n_deadman} deadman trips\n"
            f"  latency sensor -> command applied: {self.latency.describe()}"
        )

    def deadline_ns(self) -> int | None:
        return None if self.tripped else self.last_cmd_ns + self.deadman_ns

    def check(self, now_ns: int) -> None:
        dl = self.deadline_ns()
        if dl is None or now_ns < dl:
            return
        self.n_deadman += 1
        reason = f"DEADMAN: no MotorCommand for {(now_ns - self.last_cmd_ns) / 1e6:.1f} ms"
        last = self._deadman_logged_ns
        quiet = last is not None and now_ns - last < DEADMAN_LOG_EVERY_NS
        if not quiet:
            unlogged = self.n_deadman - self._deadman_logged_n - 1
            if unlogged:
                reason += f" (trip {self.n_deadman}; {unlogged} more since the last such line)"
            self._deadman_logged_ns, self._deadman_logged_n = now_ns, self.n_deadman
        self.go_safe(now_ns, reason, quiet)

    def go_safe(
        self, now_ns: int, reason: str, quiet: bool = False, expected: bool = False
    ) -> None:
        """Apply the safe values (if the channel count is known) and say why (``quiet``:
        counted only, see ``DEADMAN_LOG_EVERY_NS``; ``expected``: a normal step such as
        stopping, INFO instead of a WARNING)."""
        self.tripped = True
        self._quiet_trip = quiet
        log.log(
            logging.DEBUG if quiet else (logging.INFO if expected else logging.WARNING),
            "%s: %s: safe values applied",
            self.cfg.name,
            reason,
        )
        if self.safe is not None:
            self.actuator.apply(self.safe, safe=True, seq=-1, cause_t_ns=now_ns, t_ns=now_ns)

    def status(self, now_ns: int) -> Status:
        self._status_seq += 1
        return Status(
            self.cfg.name,
            self._status_seq - 1,
            now_ns,
            {
                "state": "safe" if self.tripped else "ok",
                "n_commands": self.n_commands,
                "n_bad": self.n_bad,
                "n_deadman": self.n_deadman,
                "max_gap_ms": self.max_gap_ns / 1e6,
                "latency_us": self.latency.summary(),
                **self.actuator.metrics(),
            },
        )


def run_actuator(spec: ActuatorKind, cfg: ActuatorConfig) -> int:
    actuator = spec.factory(cfg)
    runner = ActuatorRunner(cfg, actuator)
    security = cfg.resolved_security()
    try:
        with (
            StopSignal() as stop,
            Subscriber(
                cfg.resolved_endpoint(),
                [f"motor/{cfg.name}"],
                max_queue=1000,
                name=cfg.name,
                security=security,
            ) as sub,
        ):
            status_pub = None
            if cfg.status_endpoint:
                status_pub = Publisher(cfg.status_endpoint, security=security)
            try:
                _loop(runner, sub, stop, status_pub)
            finally:
                if status_pub is not None:
                    status_pub.close()
            # leaving: the motors go to their safe values
            runner.go_safe(time.monotonic_ns(), "stopping", expected=True)
            # leave cleanly (the core stops counting it as listening), then count what was
            # still on its way: never applied
            sub.unsubscribe([f"motor/{cfg.name}"])
            drain_end_ns = time.monotonic_ns() + DRAIN_NS
            while time.monotonic_ns() < drain_end_ns and (late := sub.recv_many(0.02)):
                runner.n_after_stop += sum(isinstance(m, MotorCommand) for m in late)
            print(runner.summary(sub.stats), flush=True)
    finally:
        actuator.close()
    return 0


def _receiver(runner: ActuatorRunner, sub: Subscriber) -> Callable[[float], int]:
    """``receive(timeout_s)``: wait up to ``timeout_s`` for commands and apply each as it
    comes off the socket, stamped when it is read; after ``MAX_PER_WAKE`` of them the rest
    of a backlog is drained under the subscriber's queue policy, as before. This
    actuator's own commands are read by the compiled reader (``spikefuse.core.hot``: the
    encoder's counterpart, the decoder's result); anything else goes through the
    subscriber's checks (rejections counted). Sequence gaps are counted per stream, as the
    subscriber's own receive counts them."""
    reader = motor_reader(runner.cfg.name)
    stream = f"motor/{runner.cfg.name}"
    seqs = sub.seq

    def raw(topic: bytes, payload: bytes) -> bool:
        msg = reader.read(topic, payload) if reader is not None else None
        if msg is None:
            return False
        seqs.see(stream, msg.seq)
        runner.on_command(msg, time.monotonic_ns())
        return True

    def decoded(msg) -> None:
        seqs.see(stream_of(msg), msg.seq)
        if isinstance(msg, MotorCommand):
            runner.on_command(msg, time.monotonic_ns())

    def receive(timeout_s: float) -> int:
        n = sub.dispatch(timeout_s, raw, decoded, MAX_PER_WAKE)
        if n >= MAX_PER_WAKE:  # a backlog: the rest under the queue policy (keep: the
            for msg in sub.recv_many(0):  # newest max_queue, the older dropped, counted)
                if isinstance(msg, MotorCommand):
                    runner.on_command(msg, time.monotonic_ns())
        return n

    return receive


def _loop(runner: ActuatorRunner, sub: Subscriber, stop: StopSignal, pub: Publisher | None) -> None:
    cfg = runner.cfg
    receive = _receiver(runner, sub)
    now_ns = time.monotonic_ns()
    runner.start(now_ns)
    end_ns = now_ns + round(cfg.duration_s * 1e9) if cfg.duration_s else None
    period_ns = round(cfg.status_period_s * 1e9)
    next_status_ns = now_ns + period_ns
    while not stop.requested:
        now_ns = time.monotonic_ns()
        if end_ns is not None and now_ns >= end_ns:
            break
        wake = next_status_ns
        dl = runner.deadline_ns()
        if dl is not None:
            wake = min(wake, dl)
        receive(min(max(wake - now_ns, 0) / 1e9, 0.25))
        now_ns = time.monotonic_ns()
        dl = runner.deadline_ns()
        if dl is not None and now_ns >= dl:
            # a last look before tripping: this process may have woken up after a stall of
            # its own, with the core's commands still in zmq's queues (I/O threads not yet
            # scheduled on a loaded machine)
            receive(DEADMAN_LAST_LOOK_S)
            now_ns = time.monotonic_ns()
        runner.check(now_ns)
        runner.actuator.service(now_ns)
        if now_ns >= next_status_ns:
            next_status_ns = max(next_status_ns + period_ns, now_ns)
            st = runner.status(now_ns)
            if pub is not None:
                pub.send(st)
