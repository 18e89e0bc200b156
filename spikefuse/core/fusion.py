"""The fusion core: event batches in, engine, motor commands and status out.

:class:`FusionCore` is the socket-free heart of ``spikefuse core``: the daemon loop
(:mod:`spikefuse.core.daemon`) hands it decoded messages and the monotonic time, asks it
when to wake next (:meth:`FusionCore.next_wake_ns`) and lets it publish through a ``send``
callable. Engine time is the host's CLOCK_MONOTONIC (drivers stamp ``t_ns`` with it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from spikefuse.core import report
from spikefuse.core.config import CoreConfig
from spikefuse.core.hot import HotPath
from spikefuse.core.inputs import InputSet, InputState
from spikefuse.core.motor import MotorChannel
from spikefuse.core.stats import LatencyHistogram, add_to
from spikefuse.engine import EngineBase
from spikefuse.errors import ConfigError
from spikefuse.graph import ResolvedGraph
from spikefuse.protocol import (
    EventBatch,
    Heartbeat,
    Message,
    MotorCommand,
    Status,
)

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
SendFn = Callable[[Message], bool]


class FusionCore:
    def __init__(
        self,
        cfg: CoreConfig,
        graph: ResolvedGraph,
        engine: EngineBase,
        now_ns: int,
        send: SendFn,
        data_clock: bool = False,
        fast_path: bool | None = None,
    ):
        """``fast_path``: use the compiled per-message path (:meth:`receive`) where it
        applies (default: ``cfg.fast_path``); False keeps every message on the Python path
        (the test oracle)."""
        self.cfg = cfg
        self.data_clock = data_clock
        self.data_now_ns = now_ns
        self.graph = graph
        self.engine = engine
        self.send = send
        self.start_ns = now_ns
        self.epoch_offset_ns = time.time_ns() - time.monotonic_ns()
        self.inputs = self._make_inputs(now_ns)
        self.drops: dict[str, int] = {}
        self.input_set = InputSet(self.inputs, self._apply, self.drops, self.epoch_offset_ns)
        self.input_set.hold = data_clock
        self.max_window_ns = self.input_set.max_window_ns
        # routing reads each Output node's newest value and the time it last changed: the
        # engine folds its output events to that as it makes them, so a long stall of a
        # flooded Integrator costs no memory per crossing (bit-identical commands)
        engine.latest_only = True
        ev = engine.start(now_ns)
        self.motors = self._make_motors(now_ns)
        self._deps = self._actuator_inputs()
        self._routes = self._output_routes()
        self.latency = LatencyHistogram()
        self._period_latency = LatencyHistogram()
        self.n_heartbeats = 0
        self.n_compiled = 0
        """messages (``clock: data``: held parts) handled by the compiled path"""
        self.n_motor_commands = 0
        self.n_motor_dropped = 0
        self.motor_seq = np.zeros(len(self.motors), np.int64)
        """next MotorCommand seq of each motor, in ``motors`` order (shared with the
        compiled path)"""
        self._motor_index = {name: i for i, name in enumerate(self.motors)}
        self._motor_names = list(self.motors)
        self._motor_topics = [b"motor/" + name.encode() for name in self.motors]
        self.clock: Callable[[], int] = time.monotonic_ns
        """Stamps MotorCommands (``t_ns``) with the monotonic clock (not with ``clock: data``)."""
        self.send_payload: Callable[[bytes, bytes], bool] | None = None
        """Sends an encoded ``[topic, payload]`` (the compiled path's MotorCommands)."""
        self._outbox: list[tuple] | None = None
        """Messages held to go out together (:meth:`on_data`), None: sent at once."""
        self._status_seq = 0
        self.status_period_ns = round(cfg.status_period_s * 1e9)
        self.next_status_ns = now_ns + self.status_period_ns
        self._last_status = self._snapshot(now_ns)
        self.bus_stats: Callable[[], dict[str, object]] | None = None
        self.listening: Callable[[bytes], bool] | None = None
        """Whether anyone holds a subscription for a topic (the daemon's publisher)."""
        self.n_unheard = {name: 0 for name in self.motors}
        self.n_motor_dropped_by: dict[str, int] = {}
        self.n_superseded = {name: 0 for name in self.motors}
        """``clock: data``: commands superseded by their heartbeat's answer (not sent)"""
        self.n_answered = 0
        """``clock: data``: heartbeats answered (a command to every motor each)"""
        self.n_unheard_startup: dict[str, int] = {}
        self._heard: set[str] = set()
        self._sensors = {st.cfg.sensor for st in self.inputs.values()}
        self.sensor_status: dict[str, tuple[Status, Status]] = {}
        """sensor -> (first, last) Status its driver published (sample counters)"""
        self._route_outputs(ev, now_ns, now_ns, None)
        use_hot = cfg.fast_path if fast_path is None else fast_path
        self.hot = HotPath.build(self) if use_hot else None

    # ---------------------------------------------------------------- setup
    def _make_inputs(self, now_ns: int) -> dict[str, InputState]:
        m = self.engine.model
        out = {}
        for name, icfg in self.cfg.inputs.items():
            if name not in self.engine.input_names:
                raise ConfigError(
                    f"graph has no input '{name}' (inputs: {self.engine.input_names})",
                    f"inputs.{name}",
                )
            sl = m.units_of(name)
            scale = float(m.unit_scale[sl][0])
            out[name] = InputState(name, icfg, sl.stop - sl.start, scale, now_ns)
        return out

    def _make_motors(self, now_ns: int) -> dict[str, MotorChannel]:
        motors = {}
        for name, acfg in self.cfg.actuators.items():
            if acfg.output not in self.engine.output_names:
                raise ConfigError(
                    f"graph has no Output node '{acfg.output}' (outputs: {self.engine.output_names})",
                    f"actuators.{name}.output",
                )
            n_out = self.engine.output_value(acfg.output).size
            motors[name] = MotorChannel(name, acfg, n_out, self.cfg.refresh_hz, now_ns)
        return motors

    def _actuator_inputs(self) -> dict[str, set[str]]:
        """Graph inputs each actuator's Output node depends on (its ancestors)."""
        graph = self.graph
        deps = {}
        for name, acfg in self.cfg.actuators.items():
            seen, todo = set(), [acfg.output]
            while todo:
                n = todo.pop()
                if n in seen:
                    continue
                seen.add(n)
                todo.extend(graph.nodes[n].sources)
            deps[name] = {i for i in self.inputs if i in seen}
        return deps

    def _output_routes(self) -> list[tuple[int, str, list[MotorChannel]]]:
        """(output index, Output node, motors fed by it) for every Output node driving a
        motor: the per-batch routing looks nothing up by name."""
        routes = []
        for idx, name in enumerate(self.engine.output_names):
            mine = [m for m in self.motors.values() if m.cfg.output == name]
            if mine:
                routes.append((idx, name, mine))
        return routes

    # ---------------------------------------------------------------- input
    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def receive(self, topic: bytes, payload: bytes, now_ns: int) -> bool:
        """The compiled path (:mod:`spikefuse.core.hot`): one received message handled and
        serviced as :meth:`handle` + :meth:`service` at ``now_ns`` would, its commands sent
        through ``send_payload`` (``clock: data``: checked, counted and held as
        :meth:`on_data` would, at the data clock's time). False: not handled, nothing
        changed (decode it and call :meth:`handle`, or :meth:`on_data`)."""
        if self.hot is None or self.send_payload is None:
            return False
        if self.data_clock:  # held until a heartbeat (InputSet.on_batch in hold mode)
            if self.hot.on_payload_held(topic, payload, self.data_now_ns) is None:
                return False
            self.n_compiled += 1
            return True
        cmds = self.hot.on_payload(topic, payload, now_ns, self.clock())
        if cmds is None:
            return False
        self.n_compiled += 1
        self._send_encoded(cmds)
        return True

    def handle(self, msg: Message, now_ns: int) -> None:
        if self.cfg.clock_offsets_ns and not self.data_clock:
            to_own_clock(msg, self.cfg.clock_offsets_ns)
        if isinstance(msg, EventBatch):
            self.input_set.on_batch(msg, now_ns)
        elif isinstance(msg, Heartbeat):
            if self.input_set.on_heartbeat(msg, now_ns):
                self.n_heartbeats += 1
        elif isinstance(msg, Status) and msg.source in self._sensors:
            first = self.sensor_status.get(msg.source, (msg, msg))[0]
            self.sensor_status[msg.source] = (first, msg)
        else:
            self.drop("unexpected_kind")

    def _apply(
        self, st: InputState, batch: EventBatch, reset: bool, t_ns: int, now_ns: int, _tag
    ) -> None:
        """A part due (the events of a batch at one time, see :class:`InputSet`): converted
        and pushed at its time (at ``now_ns`` if that is earlier), or at the engine's time if
        that is later (engine time never goes back: ``n_clamped``)."""
        got = self.input_set.take(st, batch, reset)
        if got is None:
            return
        ch, co = got
        push_t = min(t_ns, now_ns)
        if push_t < self.engine.now:
            st.n_clamped += 1
            push_t = self.engine.now
        self._push(st, ch, co, push_t, t_ns, now_ns)

    def _push(self, st: InputState, ch, co, push_t: int, cause_t: int, now_ns: int) -> None:
        if not ch.size:
            return
        try:
            ev = self.engine.push(push_t, st.name, ch, co)
        except ValueError as exc:
            self.drop("engine_rejected")
            log.warning("engine rejected a batch of '%s': %s", st.name, exc)
            return
        self._route_outputs(ev, now_ns, cause_t, push_t)

    def _route_outputs(self, ev: np.ndarray, now_ns: int, cause_t: int, push_t: int | None) -> None:
        """Hand the new values of every Output node that changed to its motors. The cause
        is the batch (``cause_t``) when the node changed at the push time, else the time of
        its last crossing (``ev`` is time-ordered, nothing in it is later than ``push_t``)."""
        if not ev.size or not self._routes:
            return
        outs = ev["output"]
        t_ns = ev["t_ns"]
        single = len(self._routes) == 1 and len(self.engine.output_names) == 1
        for idx, name, motors in self._routes:
            if single:
                last_t = int(t_ns[-1])
            else:
                hit = np.flatnonzero(outs == idx)
                if not hit.size:
                    continue
                last_t = int(t_ns[hit[-1]])
            t = cause_t if push_t is not None and last_t == push_t else last_t
            value = self.engine.output_value(name)
            for motor in motors:
                motor.set_output(value, t, now_ns)

    @property
    def n_batches(self) -> int:
        return self.input_set.n_batches

    @property
    def n_events(self) -> int:
        return self.input_set.n_events

    # ---------------------------------------------------------------- time
    def next_wake_ns(self) -> int:
        wake = self.next_status_ns
        dl = self.engine.next_deadline()
        if dl is not None:
            wake = min(wake, dl + self.max_window_ns)
        release = self.input_set.next_release_ns()
        if release is not None:
            wake = min(wake, release)
        for st in self.inputs.values():
            if not st.stale and not st.end_announced:
                wake = min(wake, st.last_seen_ns + st.timeout_ns + 1)
        for motor in self.motors.values():
            wake = min(wake, motor.due_ns())
        return wake

    def service(self, now_ns: int) -> None:
        """Do everything due at ``now_ns``: reorder releases, crossings, staleness, motor
        commands, status."""
        self.input_set.release(now_ns)
        horizon = now_ns - self.max_window_ns
        dl = self.engine.next_deadline()
        if dl is not None and dl <= horizon and horizon >= self.engine.now:
            ev = self.engine.advance(horizon)
            self._route_outputs(ev, now_ns, horizon, None)
        self._check_stale(now_ns)
        if self.hot is not None and self.send_payload is not None:
            stamp_ns = now_ns if self.data_clock else self.clock()  # as _publish_motor
            self._send_encoded(self.hot.refresh(now_ns, stamp_ns))
        else:
            for name, motor in self.motors.items():
                values = motor.poll(now_ns)
                if values is not None:
                    self._publish_motor(name, motor, values, now_ns)
        if now_ns >= self.next_status_ns:
            self.publish_status(now_ns)

    def _check_stale(self, now_ns: int) -> None:
        """The input state machine: an input is *ended* while its sensor's last word was
        the end of its stream (normal: INFO), else *stale* once silent past its timeout (a
        fault: WARNING), else live. An input that is not live is no longer fresh: the
        motors depending on it fall back as its ``on_stale`` says."""
        changed = False
        for st in self.inputs.values():
            ended = st.end_announced
            stale = not ended and now_ns - st.last_seen_ns > st.timeout_ns
            if stale != st.stale or ended != st.ended:
                _log_transition(st, stale, ended)
                st.stale, st.ended = stale, ended
                changed = True
            if stale and not st.heard and not st.warned_unheard:
                _warn_unheard(st, now_ns)
        if not changed:
            return
        for name, motor in self.motors.items():
            unsafe = any(
                (self.inputs[i].stale or self.inputs[i].ended)
                and self.inputs[i].cfg.on_stale == "safe"
                for i in self._deps[name]
            )
            motor.set_fallback(unsafe, now_ns, self.engine.output_value(motor.cfg.output))

    @property
    def degraded(self) -> bool:
        return any(st.stale for st in self.inputs.values())

    def input_states(self) -> dict[str, int]:
        """How many inputs are live, stale (silent: a fault) and ended (closed streams)."""
        n_stale = sum(st.stale for st in self.inputs.values())
        n_ended = sum(st.ended for st in self.inputs.values())
        return {"live": len(self.inputs) - n_stale - n_ended, "stale": n_stale, "ended": n_ended}

    def state(self) -> str:
        """``degraded`` (an input is stale), ``ended`` (every input's sensor closed its
        stream) or ``ok``."""
        n = self.input_states()
        if n["stale"]:
            return "degraded"
        return "ended" if self.inputs and n["ended"] == len(self.inputs) else "ok"

    # ---------------------------------------------------------------- data clock
    def on_data(self, msg: Message, t_ns: int) -> None:
        """``clock: data``. A batch is held (:attr:`InputSet.hold`): the data is complete
        up to a time only when its driver's heartbeat says so. A heartbeat at ``t_ns``
        releases what is held up to then, part by part in (time, arrival) order: the clock
        moves to each part's time, the part is pushed and what is due then is done; then
        the heartbeat is handled and answered with a command to every actuator stamped at
        its time ("everything up to here is answered"). How the drivers batched their
        samples, and how their streams' batches interleave on the way, does not change
        what the engine computes (offline replay orders the same way).

        The answer is the only command of a motor that goes out for a heartbeat
        (:meth:`_answers_only`): the motors are polled at every part's time as on the
        host's clock (minimum interval, refresh, their counters), but what they published
        in between is superseded by the answer, which carries the same values a moment
        later in data time; a lock-stepped world applies every command of a sync at the
        sync's step anyway. So the actuators, the world and a recording see one command
        per motor and heartbeat: exactly the commands applied, at the step they name."""
        if not isinstance(msg, Heartbeat):
            self.handle(msg, self.data_now_ns)
            return
        self._outbox = []  # what this heartbeat releases goes out in one burst at the end:
        seq0 = self.motor_seq.copy()  # the receivers wake once
        try:
            self.release_data(t_ns)
            self.data_now_ns = max(self.data_now_ns, t_ns)
            now = self.data_now_ns
            self.handle(msg, now)
            self.release_data(now)  # a keyframe's correction, at the heartbeat's time
            self.service(now)
            for name, motor in self.motors.items():
                self._publish_motor(name, motor, motor.commanded.copy(), now)
            self.n_answered += 1
            self._answers_only(seq0)
        finally:
            self._flush_outbox()

    def _answers_only(self, seq0: np.ndarray) -> None:
        """Drop from the outbox every command that the same motor's answer (its last one)
        supersedes (counted in :attr:`n_superseded`); the answer takes the burst's first
        sequence number (``seq0``: the actuators see no gap) and is fresh if any command it
        supersedes was (its cause is the motor's newest)."""
        out = self._outbox or []
        last: dict[str, int] = {}
        fresh: dict[str, bool] = {}
        for k, item in enumerate(out):
            name = self._motor_of(item)
            if name is not None:
                last[name] = k
                fresh[name] = fresh.get(name, False) or self._fresh_of(item)
        kept = []
        for k, item in enumerate(out):
            name = self._motor_of(item)
            if name is None:
                kept.append(item)
            elif last[name] != k:
                self.n_superseded[name] += 1
            else:
                motor, t_ns, cause_t_ns, _, msg = item  # the answer: a MotorCommand
                i = self._motor_index[name]
                msg.seq = int(seq0[i])
                self.motor_seq[i] = seq0[i] + 1
                kept.append((motor, t_ns, cause_t_ns, fresh[name], msg))
        self._outbox = kept

    def _motor_of(self, item: tuple) -> str | None:
        """The motor of an outbox item (None: a Status). Items are ``(motor, t_ns,
        cause_t_ns, fresh, message)`` (:meth:`_send`) or, encoded by the compiled path,
        ``(motor index, payload, t_ns, cause_t_ns, fresh)`` (:meth:`_send_encoded`)."""
        return self._motor_names[item[0]] if type(item[0]) is int else item[0]

    @staticmethod
    def _fresh_of(item: tuple) -> bool:
        return bool(item[4] if type(item[0]) is int else item[3])

    def release_data(self, t_ns: int) -> None:
        """``clock: data``: apply every held part up to ``t_ns`` at its own time, doing
        what is due at each (see :meth:`on_data`)."""
        while (held := self.input_set.pop_held(t_ns)) is not None:
            t, st, part, reset, tag = held
            self.data_now_ns = max(self.data_now_ns, t)
            now = self.data_now_ns
            if not reset and self._apply_compiled(st, part, t, now):
                continue
            self._apply(st, part, reset, t, now, tag)
            self.service(now)

    def _apply_compiled(self, st: InputState, part: EventBatch, t_ns: int, now_ns: int) -> bool:
        """``clock: data``: a held part applied and serviced through the compiled path, as
        :meth:`_apply` + :meth:`service` at ``now_ns`` would; False: not taken, nothing
        changed."""
        if self.hot is None or self.send_payload is None:
            return False
        cmds = self.hot.on_part(st, part, t_ns, now_ns)
        if cmds is None:
            return False
        self.n_compiled += 1
        self._send_encoded(cmds)
        if now_ns >= self.next_status_ns:
            self.publish_status(now_ns)
        return True

    def _publish_motor(
        self, name: str, motor: MotorChannel, values: np.ndarray, now_ns: int
    ) -> None:
        i = self._motor_index[name]
        seq = int(self.motor_seq[i])
        self.motor_seq[i] = seq + 1
        t_ns = now_ns if self.data_clock else self.clock()
        msg = MotorCommand(name, seq, t_ns, motor.cause_t_ns, values)
        fresh, motor.fresh = motor.fresh, False
        self._send(name, t_ns, motor.cause_t_ns, fresh, msg)

    def _send(self, motor: str | None, t_ns: int, cause_t_ns: int, fresh: bool, msg) -> None:
        """Send a MotorCommand of ``motor`` (counted) or a Status (``motor`` None), at once
        or, while :attr:`_outbox` collects (``clock: data``), when it is flushed."""
        if self._outbox is not None:
            self._outbox.append((motor, t_ns, cause_t_ns, fresh, msg))
            return
        ok = self.send(msg)
        if motor is not None:
            self._motor_sent(motor, t_ns, cause_t_ns, fresh, ok)

    def _send_encoded(self, cmds: list) -> None:
        """Send and count the commands the compiled path encoded (``(motor index, payload,
        t_ns, cause_t_ns, fresh)``), at once or, while :attr:`_outbox` collects, when it is
        flushed."""
        for cmd in cmds:
            if self._outbox is not None:
                self._outbox.append(cmd)
                continue
            i, data, t_ns, cause_t_ns, fresh = cmd
            ok = self.send_payload(self._motor_topics[i], data)  # type: ignore[misc]
            self._motor_sent(self._motor_names[i], t_ns, cause_t_ns, fresh, ok)

    def _flush_outbox(self) -> None:
        out, self._outbox = self._outbox or [], None
        for item in out:
            if type(item[0]) is int:
                self._send_encoded([item])
            else:
                self._send(*item)

    def _motor_sent(self, name: str, t_ns: int, cause_t_ns: int, fresh: bool, ok: bool) -> None:
        """Count a MotorCommand handed to the socket (``ok``) or refused by it."""
        if ok:
            self.n_motor_commands += 1
            if self.listening is not None:
                self._count_heard(name)
            if fresh:
                add_to((self.latency, self._period_latency), t_ns - cause_t_ns)
        else:
            self.n_motor_dropped += 1
            self.n_motor_dropped_by[name] = self.n_motor_dropped_by.get(name, 0) + 1

    def _count_heard(self, name: str) -> None:
        """Count a command sent while no actuator held ``motor/<name>``: before the first
        one subscribed (start-up) or after the last one left. ZeroMQ drops those silently."""
        if self.listening(b"motor/" + name.encode()):  # type: ignore[misc]
            self._heard.add(name)
            return
        self.n_unheard[name] += 1
        if name not in self._heard:
            self.n_unheard_startup[name] = self.n_unheard_startup.get(name, 0) + 1

    # ---------------------------------------------------------------- status
    def _snapshot(self, now_ns: int) -> dict[str, object]:
        c = self.engine.counters
        return {
            "t_ns": now_ns,
            "n_batches": self.n_batches,
            "n_events": self.n_events,
            "n_motor": self.n_motor_commands,
            "syn_ops": c["syn_ops"],
            "n_saturated": c["n_saturated"],
            "spikes": dict(c["spikes"]),
        }

    def status_metrics(self, now_ns: int) -> dict[str, object]:
        snap = self._snapshot(now_ns)
        prev = self._last_status
        dt_s = max((now_ns - prev["t_ns"]) / 1e9, 1e-9)
        drops = dict(self.drops)
        bus = self.bus_stats() if self.bus_stats is not None else {}
        for reason, n in bus.get("rejected", {}).items():
            drops[f"rejected_{reason}"] = n
        if bus.get("n_dropped"):
            drops["queue_full"] = bus["n_dropped"]
        if self.n_motor_dropped:
            drops["motor_send_full"] = self.n_motor_dropped
        metrics = {
            "state": self.state(),
            "input_states": self.input_states(),
            "uptime_s": round((now_ns - self.start_ns) / 1e9, 3),
            "rates": {
                "batches_per_s": round((snap["n_batches"] - prev["n_batches"]) / dt_s, 3),
                "events_per_s": round((snap["n_events"] - prev["n_events"]) / dt_s, 3),
                "motor_per_s": round((snap["n_motor"] - prev["n_motor"]) / dt_s, 3),
            },
            "engine_ops_per_s": round((snap["syn_ops"] - prev["syn_ops"]) / dt_s, 3),
            "spikes_per_s": {
                n: round((s - prev["spikes"].get(n, 0)) / dt_s, 3)
                for n, s in snap["spikes"].items()
            },
            "drops": drops,
            "n_coalesced": int(bus.get("n_coalesced", 0)),
            "n_auth_denied": int(bus.get("n_auth_denied", 0)),
            "latency_us": self._period_latency.summary(),
            "latency_total_us": self.latency.summary(),
            "totals": {
                "n_batches": self.n_batches,
                "n_events": self.n_events,
                "n_heartbeats": self.n_heartbeats,
                "n_compiled": self.n_compiled,
                "n_motor_commands": self.n_motor_commands,
                "n_superseded": sum(self.n_superseded.values()),
                "syn_ops": snap["syn_ops"],
                "n_saturated": snap["n_saturated"],  # clipped sends and deferred crossings
            },
            "inputs": {n: st.metrics(now_ns) for n, st in self.inputs.items()},
            "actuators": {
                n: {**m.metrics(), "n_unheard": self.n_unheard[n]} for n, m in self.motors.items()
            },
        }
        self._last_status = snap
        return metrics

    def publish_status(self, now_ns: int) -> Status:
        status = Status(self.cfg.name, self._status_seq, now_ns, self.status_metrics(now_ns))
        self._status_seq += 1
        self._period_latency = LatencyHistogram()
        self.next_status_ns = max(self.next_status_ns + self.status_period_ns, now_ns + 1)
        self._send(None, 0, 0, False, status)
        return status

    def summary(self, now_ns: int | None = None) -> str:
        """The closing report (see :mod:`spikefuse.core.report`)."""
        return report.summary(self, time.monotonic_ns() if now_ns is None else now_ns)


def _log_transition(st: InputState, stale: bool, ended: bool) -> None:
    """Log (and count) an input's change of state (see ``FusionCore._check_stale``). An
    input whose sensor was never heard from is stale too (its fallback applies), but that
    is a sensor still starting, not one gone silent: INFO, not counted in ``n_stale``."""
    where = f"input '{st.name}' (sensor {st.cfg.sensor})"
    if ended:
        st.n_ended += 1
        log.info("%s ended: the sensor closed its stream", where)
    elif stale and not st.heard:
        log.info("%s: nothing received yet (waiting for its sensor)", where)
    elif stale:
        st.n_stale += 1
        log.warning("%s is stale", where)
    elif st.n_stale or st.n_ended:
        log.info("%s is live again", where)
    else:
        log.info("%s is live", where)


UNHEARD_WARN_TIMEOUTS = 10
"""A sensor never heard from for this many input timeouts (and at least
:data:`UNHEARD_WARN_MIN_S`) is reported as a WARNING: a sensor still starting is normal, one
that never speaks is a wrong sensor name or endpoint."""
UNHEARD_WARN_MIN_S = 5.0


def _warn_unheard(st: InputState, now_ns: int) -> None:
    """WARN once when an input's sensor was never heard from for long (see above)."""
    waited_ns = now_ns - st.last_seen_ns  # the input's start while nothing was heard
    if waited_ns < max(UNHEARD_WARN_TIMEOUTS * st.timeout_ns, UNHEARD_WARN_MIN_S * 1e9):
        return
    st.warned_unheard = True
    log.warning(
        "input '%s' (sensor %s): nothing received in %.1f s: check that a driver publishes "
        "sensor '%s' on this input's endpoint",
        st.name,
        st.cfg.sensor,
        waited_ns / 1e9,
        st.cfg.sensor,
    )


def data_time_ns(msg: Message) -> int:
    """The data time of a message: its ``t_ns`` (a batch's earliest event: ``dt_ns`` >= 0),
    where a ``clock: data`` core starts."""
    return int(getattr(msg, "t_ns", 0))


def to_own_clock(msg: Message, offsets_ns: dict[str, int]) -> None:
    """Move a sensor message's times from its sender's host clock to this host's
    (``CoreConfig.clock_offsets_ns``, measured by a multi-host launch): latencies, input
    timeouts and time order then compare times of one clock."""
    if isinstance(msg, EventBatch | Heartbeat):
        off = offsets_ns.get(msg.sensor)
        if off:
            msg.t_ns += off
