"""The spikefuse wire protocol (see ``docs/protocol.md``).

Every message travels as two ZeroMQ frames: a topic frame (``sensor/<name>``,
``motor/<name>``, ``status/<name>``) and a payload frame. The payload is one msgpack array
``[version, kind, field, ...]``; numpy arrays travel as raw little-endian ``bin`` blobs, so
decoding them is ``np.frombuffer`` with no per-element work.

Decoded arrays are read-only views of the payload (zero copy); copy them before modifying.

* :func:`encode` / :func:`decode` are strict: ``decode`` raises :class:`ProtocolError` whose
  ``reason`` is a stable counter key and whose ``path`` names the field
  (``EventBatch.counts``).
* :class:`Decoder` is what receivers use: it never raises, counts rejections by reason and
  logs them rate-limited.
* :func:`coalesce` merges consecutive batches of one stream by summing counts per channel,
  which leaves the integrated value of every channel exactly unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from spikefuse.errors import ProtocolError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
"""Current (and newest understood) wire version."""

MAX_TOTALS_STREAMS = 64
"""Most inputs one Heartbeat may carry totals for."""
KIND_EVENT_BATCH = 1
KIND_HEARTBEAT = 2
KIND_MOTOR_COMMAND = 3
KIND_STATUS = 4

HEARTBEAT_ENDED = "ended"
"""The state of a driver's last heartbeat when it stops deliberately: its stream is closed
(its data is complete), which a receiver tells apart from a sensor gone silent."""
HEARTBEAT_STATES = ("ok", "degraded", "failed", HEARTBEAT_ENDED)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

MAX_ABS_TIME_NS = 2**62
"""Every time field (``t_ns``, ``cause_t_ns``, ``epoch_offset_ns``) lies in
[-MAX_ABS_TIME_NS, MAX_ABS_TIME_NS] (±146 years): sums of a time, an offset and a
per-event offset can then never overflow int64."""
MAX_DT_NS = 86_400 * 10**9
"""Largest per-event offset ``dt_ns`` (one day)."""
MAX_CLOCK_SKEW_NS = 86_400 * 10**9
"""A receiver acting on a message's time (the fusion core) accepts times within one day of
its own clock and counts the rest (``bad_time``); see ``docs/protocol.md`` section 4."""

MAX_NAME_LEN = 256
"""Longest sensor / actuator / input / source name accepted (characters)."""
MAX_DETAIL_LEN = 4096
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Largest payload accepted; larger ones are rejected before any parsing."""
MAX_STATUS_DEPTH = 8

_I4 = np.dtype("<i4")
_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")

# Stable rejection reasons (the keys of ``Decoder.rejected``).
R_EMPTY = "empty"
R_TOO_LARGE = "too_large"
R_TRUNCATED = "truncated"
R_MALFORMED = "malformed"
R_ENVELOPE = "bad_envelope"
R_VERSION_NEWER = "version_newer"
R_VERSION_UNKNOWN = "version_unknown"
R_UNKNOWN_KIND = "unknown_kind"
R_ARITY = "bad_arity"
R_FIELD = "bad_field"
R_LENGTH = "length_mismatch"


# --------------------------------------------------------------------------- helpers

_SMALL_BYTES = 256
"""Up to this many bytes, array checks run on the raw bytes (numpy's per-call overhead
dominates small arrays)."""


def _has_negative(raw: bytes, dtype: np.dtype) -> bool:
    """Whether a little-endian signed integer array (as bytes) holds a negative value."""
    if len(raw) <= _SMALL_BYTES:  # the sign bit lives in the last byte of each item
        return bool(raw) and max(raw[dtype.itemsize - 1 :: dtype.itemsize]) >= 0x80
    return bool(np.frombuffer(raw, dtype).min() < 0)


def _all_finite(a: np.ndarray) -> bool:
    if a.size <= 32:
        return all(map(math.isfinite, a.tolist()))
    return bool(np.isfinite(a).all())


# --------------------------------------------------------------------------- messages


def _arr_eq(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(slots=True, eq=False)
class EventBatch:
    """Sigma-delta change events of one sensor stream feeding one graph input.

    ``channels[i]`` changed by ``counts[i]`` quanta; the value a quantum stands for is
    ``1/scale`` (so the integrated value of channel c is ``sum(counts for c) / scale``).
    ``t_ns`` is the acquisition time on the sending host's CLOCK_MONOTONIC,
    ``epoch_offset_ns`` that host's CLOCK_REALTIME - CLOCK_MONOTONIC for cross-host use, and
    ``dt_ns`` optional per-event offsets (>= 0) from ``t_ns``.
    """

    sensor: str
    seq: int
    t_ns: int
    input: str
    scale: float
    channels: np.ndarray
    counts: np.ndarray
    epoch_offset_ns: int = 0
    dt_ns: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventBatch):
            return NotImplemented
        return (
            self.sensor == other.sensor
            and self.seq == other.seq
            and self.t_ns == other.t_ns
            and self.input == other.input
            and self.scale == other.scale
            and self.epoch_offset_ns == other.epoch_offset_ns
            and _arr_eq(self.channels, other.channels)
            and _arr_eq(self.counts, other.counts)
            and _arr_eq(self.dt_ns, other.dt_ns)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_events(self) -> int:
        return len(self.channels)


@dataclass(slots=True, eq=False)
class Heartbeat:
    """Liveness and health of a sensor driver; ``state`` is ok / degraded / failed, or
    ended: the driver's last message, sent once when it stops deliberately (its stream is
    closed, nothing is lost; a driver that crashed or was killed sends none).

    ``totals`` (optional) maps a graph input name to the running sum of every count the
    driver has sent on that stream, per channel (int64). Change-events integrate, so one
    lost batch would bias the receiver for good; a receiver compares these keyframes with
    what it received and applies the difference (lost batches, a restarted driver)."""

    sensor: str
    seq: int
    t_ns: int
    state: str
    detail: str = ""
    totals: dict[str, np.ndarray] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Heartbeat):
            return NotImplemented
        same = (self.sensor, self.seq, self.t_ns, self.state, self.detail) == (
            other.sensor,
            other.seq,
            other.t_ns,
            other.state,
            other.detail,
        )
        if not same or (self.totals is None) != (other.totals is None):
            return False
        if self.totals is None:
            return True
        return self.totals.keys() == other.totals.keys() and all(
            _arr_eq(v, other.totals[k]) for k, v in self.totals.items()
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True, eq=False)
class MotorCommand:
    """Actuator set-points; ``cause_t_ns`` is the acquisition time of the causing input."""

    actuator: str
    seq: int
    t_ns: int
    cause_t_ns: int
    values: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MotorCommand):
            return NotImplemented
        return (
            self.actuator == other.actuator
            and self.seq == other.seq
            and self.t_ns == other.t_ns
            and self.cause_t_ns == other.cause_t_ns
            and _arr_eq(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class Status:
    """Free-form metrics of a component (values: msgpack-able scalars, lists, str-keyed maps)."""

    source: str
    seq: int
    t_ns: int
    metrics: dict[str, Any] = field(default_factory=dict)


Message = EventBatch | Heartbeat | MotorCommand | Status


def topic_of(msg: Message) -> bytes:
    """The topic frame of a message: ``sensor/<sensor>`` (EventBatch and Heartbeat),
    ``motor/<actuator>``, ``status/<source>``."""
    if isinstance(msg, EventBatch | Heartbeat):
        return b"sensor/" + msg.sensor.encode()
    if isinstance(msg, MotorCommand):
        return b"motor/" + msg.actuator.encode()
    if isinstance(msg, Status):
        return b"status/" + msg.source.encode()
    raise ProtocolError(f"not a message: {type(msg).__name__}", reason="encode")


def stream_of(msg: Message) -> str:
    """The name of the sequence-number stream a message belongs to.

    Each stream numbers its messages 0, 1, 2, ...: EventBatch per (sensor, input)
    (``sensor/<sensor>/<input>``), Heartbeat per sensor (``heartbeat/<sensor>``),
    MotorCommand per actuator (``motor/<actuator>``), Status per source
    (``status/<source>``)."""
    if isinstance(msg, EventBatch):
        return f"sensor/{msg.sensor}/{msg.input}"
    if isinstance(msg, Heartbeat):
        return f"heartbeat/{msg.sensor}"
    if isinstance(msg, MotorCommand):
        return f"motor/{msg.actuator}"
    return f"status/{msg.source}"


# --------------------------------------------------------------------------- encoding


def _enc_err(path: str, message: str) -> ProtocolError:
    return ProtocolError(message, reason="encode", path=path)


def _enc_int(v: Any, path: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise _enc_err(path, f"expected int, found {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        raise _enc_err(path, f"{v} outside [{lo}, {hi}]")
    return v


def _enc_time(v: Any, path: str) -> int:
    return _enc_int(v, path, -MAX_ABS_TIME_NS, MAX_ABS_TIME_NS)


def _enc_name(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_NAME_LEN:
        raise _enc_err(path, f"expected a non-empty str of <= {MAX_NAME_LEN} chars, found {v!r}")
    return v


def _enc_array(a: Any, dtype: np.dtype, path: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise _enc_err(path, f"expected a 1-D array, found shape {arr.shape}")
    if arr.dtype == dtype:
        return np.ascontiguousarray(arr)
    kind = dtype.kind
    if kind == "f":
        if arr.dtype.kind not in "fiub":
            raise _enc_err(path, f"expected numbers, found dtype {arr.dtype}")
    else:
        if arr.dtype.kind not in "iub":
            raise _enc_err(path, f"expected integers, found dtype {arr.dtype}")
        info = np.iinfo(dtype)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise _enc_err(path, f"values outside the {dtype} range")
    return np.ascontiguousarray(arr, dtype)


def _fields_event_batch(m: EventBatch) -> list[Any]:
    ch = _enc_array(m.channels, _I4, "EventBatch.channels")
    co = _enc_array(m.counts, _I4, "EventBatch.counts")
    if len(ch) != len(co):
        raise _enc_err("EventBatch.counts", f"length {len(co)} != channels length {len(ch)}")
    ch_raw = ch.tobytes()
    if _has_negative(ch_raw, _I4):
        raise _enc_err("EventBatch.channels", "negative channel index")
    dt = None
    if m.dt_ns is not None:
        dta = _enc_array(m.dt_ns, _I8, "EventBatch.dt_ns")
        if len(dta) != len(ch):
            raise _enc_err("EventBatch.dt_ns", f"length {len(dta)} != channels length {len(ch)}")
        if dta.size and (int(dta.min()) < 0 or int(dta.max()) > MAX_DT_NS):
            raise _enc_err("EventBatch.dt_ns", f"offset outside [0, {MAX_DT_NS}]")
        dt = dta.tobytes()
    scale = float(m.scale)
    if not (math.isfinite(scale) and scale > 0):
        raise _enc_err("EventBatch.scale", f"expected a finite value > 0, found {m.scale!r}")
    return [
        _enc_name(m.sensor, "EventBatch.sensor"),
        _enc_int(m.seq, "EventBatch.seq", 0),
        _enc_time(m.t_ns, "EventBatch.t_ns"),
        _enc_time(m.epoch_offset_ns, "EventBatch.epoch_offset_ns"),
        _enc_name(m.input, "EventBatch.input"),
        scale,
        ch_raw,
        co.tobytes(),
        dt,
    ]


def _fields_heartbeat(m: Heartbeat) -> list[Any]:
    if m.state not in HEARTBEAT_STATES:
        raise _enc_err("Heartbeat.state", f"expected one of {HEARTBEAT_STATES}, found {m.state!r}")
    if not isinstance(m.detail, str) or len(m.detail) > MAX_DETAIL_LEN:
        raise _enc_err("Heartbeat.detail", f"expected a str of <= {MAX_DETAIL_LEN} chars")
    totals = None
    if m.totals is not None:
        if not isinstance(m.totals, dict) or len(m.totals) > MAX_TOTALS_STREAMS:
            raise _enc_err("Heartbeat.totals", f"expected a map of <= {MAX_TOTALS_STREAMS} inputs")
        totals = {
            _enc_name(k, f"Heartbeat.totals.{k}"): _enc_array(
                v, _I8, f"Heartbeat.totals.{k}"
            ).tobytes()
            for k, v in m.totals.items()
        }
    return [
        _enc_name(m.sensor, "Heartbeat.sensor"),
        _enc_int(m.seq, "Heartbeat.seq", 0),
        _enc_time(m.t_ns, "Heartbeat.t_ns"),
        m.state,
        m.detail,
        totals,
    ]


def _fields_motor(m: MotorCommand) -> list[Any]:
    values = _enc_array(m.values, _F8, "MotorCommand.values")
    if not _all_finite(values):
        raise _enc_err("MotorCommand.values", "non-finite value")
    return [
        _enc_name(m.actuator, "MotorCommand.actuator"),
        _enc_int(m.seq, "MotorCommand.seq", 0),
        _enc_time(m.t_ns, "MotorCommand.t_ns"),
        _enc_time(m.cause_t_ns, "MotorCommand.cause_t_ns"),
        values.tobytes(),
    ]


def _fields_status(m: Status) -> list[Any]:
    if not isinstance(m.metrics, dict):
        raise _enc_err("Status.metrics", f"expected a dict, found {type(m.metrics).__name__}")
    return [
        _enc_name(m.source, "Status.source"),
        _enc_int(m.seq, "Status.seq", 0),
        _enc_time(m.t_ns, "Status.t_ns"),
        m.metrics,
    ]


def _envelope(msg: Message) -> list[Any]:
    if isinstance(msg, EventBatch):
        return [PROTOCOL_VERSION, KIND_EVENT_BATCH, *_fields_event_batch(msg)]
    if isinstance(msg, Heartbeat):
        return [PROTOCOL_VERSION, KIND_HEARTBEAT, *_fields_heartbeat(msg)]
    if isinstance(msg, MotorCommand):
        return [PROTOCOL_VERSION, KIND_MOTOR_COMMAND, *_fields_motor(msg)]
    if isinstance(msg, Status):
        return [PROTOCOL_VERSION, KIND_STATUS, *_fields_status(msg)]
    raise ProtocolError(f"not a message: {type(msg).__name__}", reason="encode")


def _metrics_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot encode {type(obj).__name__}")


class Encoder:
    """Encodes messages with one reusable ``msgpack.Packer`` (not thread-safe: one per
    sending thread, e.g. one per Publisher)."""

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, default=_metrics_default)

    def encode(self, msg: Message) -> bytes:
        """Payload bytes of ``msg``; raises ProtocolError(reason="encode") on invalid fields."""
        env = _envelope(msg)
        try:
            return self._packer.pack(env)
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise ProtocolError(
                f"cannot encode: {exc}", reason="encode", path=type(msg).__name__
            ) from None


def encode(msg: Message) -> bytes:
    """Payload bytes of ``msg`` (the topic is a separate frame: :func:`topic_of`)."""
    env = _envelope(msg)
    try:
        return msgpack.packb(env, use_bin_type=True, default=_metrics_default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(
            f"cannot encode: {exc}", reason="encode", path=type(msg).__name__
        ) from None


# --------------------------------------------------------------------------- decoding


def _type_name(v: Any) -> str:
    return "nil" if v is None else type(v).__name__


def _bad(path: str, message: str, reason: str = R_FIELD) -> ProtocolError:
    return ProtocolError(message, reason=reason, path=path)


def _int(v: Any, path: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    if type(v) is not int:
        raise _bad(path, f"expected int, found {_type_name(v)}")
    if not lo <= v <= hi:
        raise _bad(path, f"{v} outside [{lo}, {hi}]")
    return v


def _time(v: Any, path: str) -> int:
    return _int(v, path, -MAX_ABS_TIME_NS, MAX_ABS_TIME_NS)


def _name(v: Any, path: str) -> str:
    if type(v) is not str:
        raise _bad(path, f"expected str, found {_type_name(v)}")
    if not v or len(v) > MAX_NAME_LEN:
        raise _bad(path, f"expected 1..{MAX_NAME_LEN} chars, found {len(v)}")
    return v


def _array(v: Any, dtype: np.dtype, path: str) -> np.ndarray:
    if type(v) is not bytes:
        raise _bad(path, f"expected bin, found {_type_name(v)}")
    if len(v) % dtype.itemsize:
        raise _bad(
            path, f"{len(v)} bytes is not a multiple of {dtype.itemsize} ({dtype})", R_TRUNCATED
        )
    return np.frombuffer(v, dtype)


def _dec_event_batch(f: list[Any]) -> EventBatch:
    sensor = _name(f[0], "EventBatch.sensor")
    seq = _int(f[1], "EventBatch.seq", 0)
    t_ns = _time(f[2], "EventBatch.t_ns")
    epoch = _time(f[3], "EventBatch.epoch_offset_ns")
    inp = _name(f[4], "EventBatch.input")
    scale = f[5]
    if type(scale) is not float or not (math.isfinite(scale) and scale > 0):
        raise _bad("EventBatch.scale", f"expected a finite float > 0, found {scale!r}")
    channels = _array(f[6], _I4, "EventBatch.channels")
    counts = _array(f[7], _I4, "EventBatch.counts")
    if len(counts) != len(channels):
        raise _bad(
            "EventBatch.counts",
            f"length {len(counts)} != channels length {len(channels)}",
            R_LENGTH,
        )
    if _has_negative(f[6], _I4):
        raise _bad("EventBatch.channels", "negative channel index")
    dt = None
    if f[8] is not None:
        dt = _array(f[8], _I8, "EventBatch.dt_ns")
        if len(dt) != len(channels):
            raise _bad(
                "EventBatch.dt_ns", f"length {len(dt)} != channels length {len(channels)}", R_LENGTH
            )
        if _has_negative(f[8], _I8) or (dt.size and int(dt.max()) > MAX_DT_NS):
            raise _bad("EventBatch.dt_ns", f"offset outside [0, {MAX_DT_NS}]")
    return EventBatch(sensor, seq, t_ns, inp, scale, channels, counts, epoch, dt)


def _dec_heartbeat(f: list[Any]) -> Heartbeat:
    sensor = _name(f[0], "Heartbeat.sensor")
    seq = _int(f[1], "Heartbeat.seq", 0)
    t_ns = _time(f[2], "Heartbeat.t_ns")
    state = f[3]
    if state not in HEARTBEAT_STATES or type(state) is not str:
        raise _bad("Heartbeat.state", f"expected one of {HEARTBEAT_STATES}, found {state!r}")
    detail = f[4]
    if type(detail) is not str or len(detail) > MAX_DETAIL_LEN:
        raise _bad("Heartbeat.detail", f"expected str of <= {MAX_DETAIL_LEN} chars")
    raw = f[5]
    totals = None
    if raw is not None:
        if type(raw) is not dict or len(raw) > MAX_TOTALS_STREAMS:
            raise _bad(
                "Heartbeat.totals", f"expected nil or a map of <= {MAX_TOTALS_STREAMS} inputs"
            )
        totals = {}
        for k, v in raw.items():
            name = _name(k, "Heartbeat.totals")
            totals[name] = _array(v, _I8, f"Heartbeat.totals.{name}")
    return Heartbeat(sensor, seq, t_ns, state, detail, totals)


def _dec_motor(f: list[Any]) -> MotorCommand:
    actuator = _name(f[0], "MotorCommand.actuator")
    seq = _int(f[1], "MotorCommand.seq", 0)
    t_ns = _time(f[2], "MotorCommand.t_ns")
    cause = _time(f[3], "MotorCommand.cause_t_ns")
    values = _array(f[4], _F8, "MotorCommand.values")
    if not _all_finite(values):
        raise _bad("MotorCommand.values", "non-finite value")
    return MotorCommand(actuator, seq, t_ns, cause, values)


def _check_metric(v: Any, path: str, depth: int) -> None:
    if depth > MAX_STATUS_DEPTH:
        raise _bad(path, f"nested deeper than {MAX_STATUS_DEPTH}")
    t = type(v)
    if v is None or t in (bool, int, float, str, bytes):
        return
    if t is list:
        for i, item in enumerate(v):
            _check_metric(item, f"{path}[{i}]", depth + 1)
        return
    if t is dict:
        for k, item in v.items():
            if type(k) is not str:
                raise _bad(path, f"map key must be str, found {_type_name(k)}")
            _check_metric(item, f"{path}.{k}", depth + 1)
        return
    raise _bad(path, f"unsupported value type {t.__name__}")


def _dec_status(f: list[Any]) -> Status:
    source = _name(f[0], "Status.source")
    seq = _int(f[1], "Status.seq", 0)
    t_ns = _time(f[2], "Status.t_ns")
    metrics = f[3]
    if type(metrics) is not dict:
        raise _bad("Status.metrics", f"expected map, found {_type_name(metrics)}")
    _check_metric(metrics, "Status.metrics", 0)
    return Status(source, seq, t_ns, metrics)


# kind -> (name, number of fields after version and kind, decoder)
_KINDS = {
    KIND_EVENT_BATCH: ("EventBatch", 9, _dec_event_batch),
    KIND_HEARTBEAT: ("Heartbeat", 6, _dec_heartbeat),
    KIND_MOTOR_COMMAND: ("MotorCommand", 5, _dec_motor),
    KIND_STATUS: ("Status", 4, _dec_status),
}


def _unpack(payload: bytes) -> Any:
    if type(payload) is not bytes:
        if isinstance(payload, bytearray | memoryview):
            payload = bytes(payload)
        else:
            raise _bad("payload", f"expected bytes, found {_type_name(payload)}", R_MALFORMED)
    n = len(payload)
    if n == 0:
        raise _bad("payload", "empty payload", R_EMPTY)
    if n > MAX_PAYLOAD_BYTES:
        raise _bad("payload", f"{n} bytes > limit {MAX_PAYLOAD_BYTES}", R_TOO_LARGE)
    try:
        # msgpack >= 1.0 defaults: str not raw, str map keys only, and every length limit
        # (str, bin, array, map, ext) bounded by the payload's own size, so a hostile length
        # field cannot make it allocate more than the payload justifies
        return msgpack.unpackb(payload)
    except ValueError as exc:  # msgpack's errors (ExtraData, FormatError, ...) are ValueErrors
        text = str(exc)
        # a length beyond msgpack's limits (the payload's own size) cannot fit in the
        # payload either: the data ends early (a header cut inside its first bytes)
        if "incomplete input" in text or "exceeds max_" in text:
            raise _bad("payload", f"truncated msgpack data ({text})", R_TRUNCATED) from None
        raise _bad(
            "payload", f"not valid msgpack: {text or type(exc).__name__}", R_MALFORMED
        ) from None
    except TypeError as exc:
        raise _bad("payload", f"not valid msgpack: {exc}", R_MALFORMED) from None


def decode(payload: bytes) -> Message:
    """Decode one payload. Raises :class:`ProtocolError` with ``reason`` (a stable counter
    key) and ``path`` (the offending field, e.g. ``EventBatch.counts``)."""
    obj = _unpack(payload)
    if type(obj) is not list or len(obj) < 2:
        raise _bad(
            "envelope", f"expected [version, kind, ...], found {_type_name(obj)}", R_ENVELOPE
        )
    version, kind = obj[0], obj[1]
    if type(version) is not int:
        raise _bad("envelope.version", f"expected int, found {_type_name(version)}", R_ENVELOPE)
    if version > PROTOCOL_VERSION:
        raise _bad(
            "envelope.version",
            f"version {version} is newer than supported {PROTOCOL_VERSION}",
            R_VERSION_NEWER,
        )
    if version != PROTOCOL_VERSION:
        raise _bad("envelope.version", f"unknown version {version}", R_VERSION_UNKNOWN)
    spec = _KINDS.get(kind) if type(kind) is int else None
    if spec is None:
        raise _bad("envelope.kind", f"unknown message kind {kind!r}", R_UNKNOWN_KIND)
    name, n_fields, dec = spec
    if len(obj) - 2 != n_fields:
        reason = R_TRUNCATED if len(obj) - 2 < n_fields else R_ARITY
        raise _bad(name, f"expected {n_fields} fields, found {len(obj) - 2}", reason)
    return dec(obj[2:])


class Decoder:
    """Counting decoder for receivers: :meth:`decode` never raises on bad input; it returns
    ``None``, increments ``rejected[reason]`` and logs at most one line per reason every
    ``log_interval_s`` (with the number suppressed meanwhile)."""

    def __init__(self, name: str = "decoder", log_interval_s: float = 5.0) -> None:
        self.name = name
        self.log_interval_s = log_interval_s
        self.n_ok = 0
        self.rejected: dict[str, int] = {}
        self._last_log_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def decode(self, payload: bytes) -> Message | None:
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            self.reject(exc.reason, str(exc))
            return None
        self.n_ok += 1
        return msg

    def reject(self, reason: str, detail: str) -> None:
        """Count a rejection (also used by the bus for frame/topic problems) and log it
        rate-limited."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        now_s = time.monotonic()
        last_s = self._last_log_s.get(reason)
        if last_s is not None and now_s - last_s < self.log_interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last_log_s[reason] = now_s
        n_suppressed = self._suppressed.pop(reason, 0)
        extra = f" ({n_suppressed} more suppressed)" if n_suppressed else ""
        log.warning("%s: rejected message [%s]: %s%s", self.name, reason, detail, extra)


# --------------------------------------------------------------------------- coalescing


def coalesce(a: EventBatch, b: EventBatch) -> EventBatch:
    """Merge two consecutive batches of one stream (same sensor, input and scale) into one
    whose per-channel count sums equal the sum of both: the integrated value of every
    channel is exactly what it would have been. The result carries ``a``'s seq (so a
    sender restart stays visible downstream as seq going back), ``b``'s ``t_ns`` and epoch
    offset, and no per-event offsets (temporal resolution is what is given up)."""
    return coalesce_many([a, b])


def coalesce_many(batches: Sequence[EventBatch]) -> EventBatch:
    """:func:`coalesce` over any number of consecutive batches of one stream (one pass)."""
    if not batches:
        raise ValueError("coalesce_many: no batches")
    first, last = batches[0], batches[-1]
    for b in batches[1:]:
        if b.sensor != first.sensor or b.input != first.input or b.scale != first.scale:
            raise ValueError(
                f"coalesce: batches of different streams: {first.sensor}/{first.input}"
                f"@{first.scale} vs {b.sensor}/{b.input}@{b.scale}"
            )
    if len(batches) == 1:
        channels = np.asarray(first.channels, np.int64)
        counts = np.asarray(first.counts, np.int64)
    else:
        channels = np.concatenate([np.asarray(b.channels, np.int64) for b in batches])
        counts = np.concatenate([np.asarray(b.counts, np.int64) for b in batches])
    uniq, inverse = np.unique(channels, return_inverse=True)
    sums = np.zeros(len(uniq), np.int64)
    np.add.at(sums, inverse, counts)
    keep = sums != 0
    out_ch, out_co = _split_int32(uniq[keep], sums[keep])
    return EventBatch(
        sensor=last.sensor,
        seq=first.seq,
        t_ns=last.t_ns,
        input=last.input,
        scale=last.scale,
        channels=out_ch,
        counts=out_co,
        epoch_offset_ns=last.epoch_offset_ns,
        dt_ns=None,
    )


def _split_int32(channels: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel/count pairs as int32; a sum beyond the int32 range becomes several events of
    the same channel so nothing is lost."""
    big = np.abs(sums) > INT32_MAX
    if not big.any():
        return channels.astype(np.int32), sums.astype(np.int32)
    n_parts = np.where(big, -(-np.abs(sums) // INT32_MAX), 1)
    rep_ch = np.repeat(channels, n_parts)
    rep_sum = np.repeat(sums, n_parts)
    idx = np.arange(len(rep_ch)) - np.repeat(np.cumsum(n_parts) - n_parts, n_parts)
    sign = np.sign(rep_sum)
    mag = np.abs(rep_sum)
    part = np.minimum(INT32_MAX, mag - idx * INT32_MAX)
    return rep_ch.astype(np.int32), (sign * part).astype(np.int32)
