"""The fusion core's compiled per-message path (``spikefuse.core._hot``), behind a class
that decides whether it applies and checks what it is given.

One call per received EventBatch payload decodes it (msgpack framing, raw little-endian
arrays), checks it (kind, known stream, seq = last + 1, times within
``MAX_CLOCK_SKEW_NS`` of now, channels in range, scale = the input's), updates the input's
totals, pushes it into the compiled engine part by part (one push per distinct event
time, as the Python path does), routes the outputs to the motors (clamp, minimum interval)
and encodes the MotorCommands that are due, with the semantics of
``FusionCore.handle`` followed by ``FusionCore.service`` at the same time. Anything else
(another kind, a seq anomaly, a scale change, an out-of-range value, an input whose
staleness changes, a heartbeat, a bad payload) returns ``None`` having
changed nothing, and the Python path handles the message: every rule has one source, the
Python code, which the compiled path only takes a short cut through. See ``docs/core.md``.

A ``clock: data`` core (the lock-stepped simulator's) holds every batch until a heartbeat
vouches for its time (:attr:`~spikefuse.core.inputs.InputSet.hold`, the Python input path
checks and counts it on arrival), then applies the held parts in (time, arrival) order:
:meth:`HotPath.on_part` applies one part and services at its time, with the semantics of
``FusionCore._apply`` followed by ``FusionCore.service``, or returns ``None`` (a reset,
another scale, a time before the engine's clock, a staleness change) for the Python path.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Protocol

import numpy as np

from spikefuse import protocol
from spikefuse.engine import Engine

if TYPE_CHECKING:
    from spikefuse.core.fusion import FusionCore
    from spikefuse.core.inputs import InputState
    from spikefuse.protocol import EventBatch, MotorCommand

log = logging.getLogger(__name__)

Command = tuple[int, bytes, int, int, bool]
"""(motor index, MotorCommand payload, t_ns, cause_t_ns, fresh)"""


def _wire_unavailable() -> str | None:
    """Why the compiled readers and writer cannot handle this host's wire (None: they can)."""
    kinds = (protocol.KIND_EVENT_BATCH, protocol.KIND_MOTOR_COMMAND)
    if any(2 + protocol._KINDS[k][1] > 15 for k in kinds):
        return "a wire format whose envelope is no msgpack fixarray (> 15 items)"
    if sys.byteorder != "little":
        return "a big-endian host (the wire arrays are little-endian)"
    return None


def unavailable(core: FusionCore) -> str | None:
    """Why the compiled path cannot serve ``core`` (None: it can)."""
    wire = _wire_unavailable()
    if wire is not None:
        return wire
    if core.cfg.clock_offsets_ns:
        return "clock_offsets_ns (another host's sensor times, moved on the Python path)"
    if type(core.engine) is not Engine:
        return f"the {type(core.engine).__name__} backend (the compiled engine only)"
    if core.input_set.max_window_ns:
        return "an input with reorder_window_ms > 0"
    if any(m.cfg.max_rate_per_s is not None for m in core.motors.values()):
        return "an actuator with max_rate_per_s (slew limit)"
    streams = [(st.cfg.sensor, st.cfg.input or st.name) for st in core.inputs.values()]
    if len(set(streams)) != len(streams):
        return "two graph inputs fed by the same stream"
    return None


def wire_limits() -> dict[str, int]:
    """The protocol's bounds and wire constants the compiled readers and writer check
    against (each from the module that owns it: no limit is a literal in ``_hot``)."""
    return {
        "max_abs_time_ns": protocol.MAX_ABS_TIME_NS,
        "max_dt_ns": protocol.MAX_DT_NS,
        "max_skew_ns": protocol.MAX_CLOCK_SKEW_NS,
        "max_payload_bytes": protocol.MAX_PAYLOAD_BYTES,
        "version": protocol.PROTOCOL_VERSION,
        "kind_batch": protocol.KIND_EVENT_BATCH,
        "kind_motor": protocol.KIND_MOTOR_COMMAND,
        # the number of fields of each kind (the decoder's table)
        "batch_fields": protocol._KINDS[protocol.KIND_EVENT_BATCH][1],
        "motor_fields": protocol._KINDS[protocol.KIND_MOTOR_COMMAND][1],
    }


class MotorReader(Protocol):
    def read(self, topic: bytes, payload: bytes) -> MotorCommand | None: ...


def motor_reader(actuator: str) -> MotorReader | None:
    """The compiled reader of ``actuator``'s MotorCommands (``read(topic, payload)``: the
    command ``protocol.decode`` would return, or None: decode it), for an actuator's
    receive path; None where it does not apply (the wire checks of :func:`unavailable`)."""
    from spikefuse.core._hot import _MotorReader

    if _wire_unavailable() is not None:
        return None
    return _MotorReader(wire_limits(), actuator)


class HotPath:
    """The compiled path of one :class:`~spikefuse.core.fusion.FusionCore`
    (:meth:`build` returns None, with the reason logged, where it does not apply)."""

    def __init__(self, core: FusionCore):
        from spikefuse.core._hot import _Hot

        reason = unavailable(core)
        if reason is not None:
            raise ValueError(f"the compiled path does not apply: {reason}")
        model = core.engine.model
        streams = []
        for st in core.inputs.values():
            sensor = st.cfg.sensor.encode()
            node = core.engine._input_index[st.name]
            streams.append(
                (st, sensor, (st.cfg.input or st.name).encode(), b"sensor/" + sensor, node)
            )
        order = {name: i for i, name in enumerate(core.motors)}
        routes = []
        for idx, name, motors in core._routes:
            sl = model.units_of(name)
            routes.append((idx, sl.start, sl.stop - sl.start, [order[m.name] for m in motors]))
        motors = [
            (
                m,
                name.encode(),
                np.ascontiguousarray(m.index, np.int64),
                m.cfg.clamp,
                m.refresh_ns,
                m.min_interval_ns,
            )
            for name, m in core.motors.items()
        ]
        limits = wire_limits()
        self._hot = _Hot(core, limits, streams, routes, motors, core.motor_seq)
        self._stream_of = {st.name: k for k, (st, *_) in enumerate(streams)}

    @classmethod
    def build(cls, core: FusionCore) -> HotPath | None:
        reason = unavailable(core)
        if reason is not None:
            log.info("core '%s': Python per-message path (%s)", core.cfg.name, reason)
            return None
        return cls(core)

    def on_payload(
        self, topic: bytes, payload: bytes, now_ns: int, stamp_ns: int
    ) -> list[Command] | None:
        """Handle one received ``[topic, payload]`` at ``now_ns``, stamping commands with
        ``stamp_ns``; None: not handled, nothing changed (the Python path's turn)."""
        if type(topic) is not bytes or type(payload) is not bytes:
            return None
        return self._hot.on_payload(topic, payload, now_ns, stamp_ns)

    def refresh(self, now_ns: int, stamp_ns: int) -> list[Command]:
        """The motors due at ``now_ns`` (the motor part of ``FusionCore.service``), their
        commands encoded and stamped with ``stamp_ns``."""
        return self._hot.refresh(now_ns, stamp_ns)

    def on_payload_held(self, topic: bytes, payload: bytes, now_ns: int) -> bool | None:
        """``clock: data``: check, count and hold one received ``[topic, payload]`` as
        ``InputSet.on_batch`` in hold mode would at ``now_ns``; None: not handled, nothing
        changed (the Python path's turn)."""
        if type(topic) is not bytes or type(payload) is not bytes:
            return None
        return self._hot.on_payload_held(topic, payload, now_ns)

    def on_part(
        self, st: InputState, part: EventBatch, t_ns: int, now_ns: int
    ) -> list[Command] | None:
        """``clock: data``: apply a held part of ``st`` at its time ``t_ns`` and service at
        ``now_ns`` (``FusionCore._apply`` + ``service``), commands stamped ``now_ns``; None:
        not handled, nothing changed (the Python path's turn)."""
        return self._hot.on_part(
            self._stream_of[st.name], part.channels, part.counts, part.scale, t_ns, now_ns
        )
