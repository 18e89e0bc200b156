"""Readers of the supported log formats; each returns the encoders it filled."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.encoding import DvsEncoder
from spikefuse.errors import ConfigError, LogFileError
from spikefuse.recording.importers.config import ImportMap, StreamMap
from spikefuse.recording.importers.emit import FrameEncoder, GroupEncoder, NativeEvents
from spikefuse.tables import G0_M_S2, PRESETS, load_mapping, load_table

DEG = math.pi / 180.0
GAUSS_TO_UT = 100.0


class Skips:
    """What an import left out, by reason (all counted, none silent)."""

    def __init__(self) -> None:
        self.unknown_types: dict[str, int] = {}
        self.unmapped_topics: dict[str, int] = {}
        self.bad_messages: dict[str, int] = {}

    @staticmethod
    def add(d: dict[str, int], key: str, n: int = 1) -> None:
        d[key] = d.get(key, 0) + n


def _where(imap: ImportMap, i: int, field: str) -> str:
    return f"{imap.source_name}: streams[{i}].{field}"


def _check_groups(imap: ImportMap, i: int, sm: StreamMap, available: list[str], what: str) -> None:
    for g in sm.groups:
        if g not in available:
            raise ConfigError(
                f"group {g!r} is not provided by {what} (available: {available})",
                _where(imap, i, "groups"),
            )


def _encoders(sm: StreamMap, sizes: dict[str, int]) -> dict[str, GroupEncoder]:
    return {
        g: GroupEncoder(sm.sensor, g, gm.input or g, gm.scale, sizes[g])
        for g, gm in sm.groups.items()
        if gm.enabled
    }


# --------------------------------------------------------------------------- ROS


def _v3(v: Any) -> tuple[float, float, float]:
    return (v.x, v.y, v.z)


ROS_GROUPS: dict[str, dict[str, tuple[int, Callable[[Any], tuple]]]] = {
    "sensor_msgs/msg/Imu": {
        "gyro": (3, lambda m: _v3(m.angular_velocity)),
        "accel": (3, lambda m: _v3(m.linear_acceleration)),
        "orientation": (
            4,
            lambda m: (m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z),
        ),
    },
    "nav_msgs/msg/Odometry": {
        "position": (3, lambda m: _v3(m.pose.pose.position)),
        "velocity": (3, lambda m: _v3(m.twist.twist.linear)),
        "angular_velocity": (3, lambda m: _v3(m.twist.twist.angular)),
    },
    "sensor_msgs/msg/NavSatFix": {
        "fix": (3, lambda m: (m.latitude, m.longitude, m.altitude)),
    },
}
IMAGE_TYPE = "sensor_msgs/msg/Image"


def ros_image_array(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image as a numpy array (mono8/16, rgb8/bgr8, rgba8/bgra8)."""
    enc = msg.encoding.lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    spec = {
        "mono8": (np.uint8, 1),
        "8uc1": (np.uint8, 1),
        "mono16": (np.uint16, 1),
        "16uc1": (np.uint16, 1),
        "rgb8": (np.uint8, 3),
        "bgr8": (np.uint8, 3),
        "rgba8": (np.uint8, 4),
        "bgra8": (np.uint8, 4),
    }.get(enc)
    if spec is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}")
    dtype, n_ch = spec
    item = np.dtype(dtype).itemsize
    if step < w * n_ch * item or data.size < h * step:
        raise ValueError(f"image data too short: {data.size} bytes for {h}x{w} step {step}")
    rows = data[: h * step].reshape(h, step)[:, : w * n_ch * item]
    big = bool(getattr(msg, "is_bigendian", 0))
    arr = rows.copy().view(np.dtype(dtype).newbyteorder(">" if big else "<")).reshape(h, w, n_ch)
    if enc.startswith("bgr"):
        arr = arr[:, :, [2, 1, 0] + ([3] if n_ch == 4 else [])]
    return arr[:, :, 0] if n_ch == 1 else arr


def _ros_path(path: Path) -> Path:
    if (
        path.is_file()
        and path.suffix in (".mcap", ".db3")
        and (path.parent / "metadata.yaml").is_file()
    ):
        return path.parent
    return path


def read_ros(path: Path, imap: ImportMap, skips: Skips) -> list[GroupEncoder]:
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = _ros_path(path)
    try:
        reader = AnyReader([path])
        reader.open()
    except (AnyReaderError, OSError, ValueError) as exc:
        raise LogFileError(f"{path}: cannot read as a ROS bag: {exc}") from None
    try:
        return _read_ros_open(reader, path, imap, skips)
    finally:
        reader.close()


def _read_ros_open(reader: Any, path: Path, imap: ImportMap, skips: Skips) -> list[GroupEncoder]:
    conns = {c.topic: c for c in reader.connections}
    plan: dict[str, tuple[StreamMap, dict[str, GroupEncoder], FrameEncoder | None]] = {}
    for i, sm in enumerate(imap.streams):
        c = conns.get(sm.topic)
        if c is None:
            raise ConfigError(
                f"topic {sm.topic!r} is not in {path} (topics: {sorted(conns)})",
                _where(imap, i, "topic"),
            )
        if c.msgtype == IMAGE_TYPE:
            _check_groups(imap, i, sm, ["frame"], IMAGE_TYPE)
            d = sm.dvs or _default_dvs()
            dvs = DvsEncoder(d.width, d.height, d.threshold, round(d.refractory_us * 1000), d.eps)
            gm = sm.groups["frame"]
            plan[sm.topic] = (sm, {}, FrameEncoder(sm.sensor, "frame", gm.input or "frame", dvs))
        elif c.msgtype in ROS_GROUPS:
            groups = ROS_GROUPS[c.msgtype]
            _check_groups(imap, i, sm, list(groups), c.msgtype)
            plan[sm.topic] = (sm, _encoders(sm, {g: n for g, (n, _) in groups.items()}), None)
        else:
            Skips.add(skips.unknown_types, c.msgtype, c.msgcount)
    for topic, c in conns.items():
        if topic not in plan and c.msgtype in ROS_GROUPS | {IMAGE_TYPE: None}:
            Skips.add(skips.unmapped_topics, topic, c.msgcount)
        elif topic not in plan and all(s.topic != topic for s in imap.streams):
            Skips.add(skips.unknown_types, c.msgtype, c.msgcount)
    samples: dict[str, list] = {t: [] for t in plan}
    selected = [c for c in reader.connections if c.topic in plan]
    for c, t_ns, raw in reader.messages(connections=selected):
        sm, encs, frame_enc = plan[c.topic]
        try:
            msg = reader.deserialize(raw, c.msgtype)
            if frame_enc is not None:
                frame_enc.frame(int(t_ns), ros_image_array(msg))
            else:
                groups = ROS_GROUPS[c.msgtype]
                samples[c.topic].append((int(t_ns), [groups[g][1](msg) for g in encs]))
        except (ValueError, TypeError, AttributeError, struct.error, AssertionError) as exc:
            Skips.add(skips.bad_messages, f"{c.topic}: {type(exc).__name__}")
    out: list[GroupEncoder] = []
    for topic, (_sm, encs, frame_enc) in plan.items():
        if frame_enc is not None:
            out.append(frame_enc)
            continue
        rows = samples[topic]
        t = np.array([r[0] for r in rows], np.int64)
        for k, enc in enumerate(encs.values()):
            vals = np.array([r[1][k] for r in rows], np.float64).reshape(len(rows), -1)
            enc.samples(t, vals)
            out.append(enc)
    return out


def _default_dvs():
    from spikefuse.recording.importers.config import DvsMap

    return DvsMap()


# --------------------------------------------------------------------------- PX4 ULog

ULOG_ALIASES: dict[str, dict[str, tuple[list[str], float]]] = {
    "sensor_combined": {
        "gyro": ([f"gyro_rad[{i}]" for i in range(3)], 1.0),
        "accel": ([f"accelerometer_m_s2[{i}]" for i in range(3)], 1.0),
        "mag": ([f"magnetometer_ga[{i}]" for i in range(3)], GAUSS_TO_UT),
    },
    "vehicle_attitude": {"q": ([f"q[{i}]" for i in range(4)], 1.0)},
}


def _ulog_fields(
    name: str, group: str, data: dict[str, np.ndarray]
) -> tuple[list[str], float] | None:
    alias = ULOG_ALIASES.get(name, {}).get(group)
    if alias is not None and all(f in data for f in alias[0]):
        return alias
    if name == "actuator_outputs" and group == "output":
        return [f"output[{i}]" for i in range(16) if f"output[{i}]" in data], 1.0
    indexed = sorted(
        (f for f in data if f.startswith(group + "[")), key=lambda f: int(f[len(group) + 1 : -1])
    )
    if indexed:
        return indexed, 1.0
    if group in data:
        return [group], 1.0
    return None


def read_ulog(path: Path, imap: ImportMap, skips: Skips) -> list[GroupEncoder]:
    from pyulog import ULog
    from pyulog.exceptions import ULogException

    names = sorted({s.topic for s in imap.streams})
    try:
        ulog = ULog(str(path), names)
    except (
        ULogException,
        OSError,
        ValueError,
        struct.error,
        IndexError,
        KeyError,
        UnicodeDecodeError,
    ) as exc:
        raise LogFileError(
            f"{path}: cannot read as a PX4 ULog: {type(exc).__name__}: {exc}"
        ) from None
    have = {(d.name, d.multi_id): d for d in ulog.data_list}
    out: list[GroupEncoder] = []
    for i, sm in enumerate(imap.streams):
        d = have.get((sm.topic, sm.multi_id))
        if d is None:
            avail = sorted({n for n, _ in have}) or "none of the mapped ones"
            raise ConfigError(
                f"ULog message {sm.topic!r} (multi_id {sm.multi_id}) is not in {path} (found: {avail})",
                _where(imap, i, "topic"),
            )
        t_ns = d.data["timestamp"].astype(np.int64) * 1000
        for g, gm in sm.groups.items():
            fields = _ulog_fields(sm.topic, g, d.data)
            if not fields or not fields[0]:
                raise ConfigError(
                    f"group {g!r}: no such field in ULog message {sm.topic!r} (fields: {sorted(d.data)})",
                    _where(imap, i, "groups"),
                )
            if not gm.enabled:
                continue
            cols, factor = fields
            vals = np.stack([d.data[f].astype(np.float64) for f in cols], axis=1) * factor
            enc = GroupEncoder(sm.sensor, g, gm.input or g, gm.scale, len(cols))
            enc.samples(t_ns, vals)
            out.append(enc)
    for msg in ulog.dropouts or []:
        Skips.add(skips.bad_messages, "ulog_dropout_ms", int(msg.duration))
    return out


# --------------------------------------------------------------------------- AEDAT4


def read_aedat(path: Path, imap: ImportMap, skips: Skips) -> list[GroupEncoder]:
    import aedat

    try:
        dec = aedat.Decoder(str(path))
        streams = dec.id_to_stream()
        packets = list(dec)
    except (OSError, RuntimeError, ValueError) as exc:
        raise LogFileError(f"{path}: cannot read as AEDAT4: {exc}") from None
    types = {s["type"]: s for s in streams.values()}
    by_topic = {"imu": "imus", "events": "events"}
    encs: list[GroupEncoder] = []
    imu_plan: list[tuple[str, GroupEncoder]] = []
    ev_enc: NativeEvents | None = None
    for i, sm in enumerate(imap.streams):
        kind = by_topic.get(sm.topic)
        if kind is None or kind not in types:
            raise ConfigError(
                f"stream {sm.topic!r} is not in {path} (streams: {sorted(types)}; map names: imu, events)",
                _where(imap, i, "topic"),
            )
        if kind == "imus":
            _check_groups(imap, i, sm, ["gyro", "accel"], "AEDAT imu")
            for g, enc in _encoders(sm, {"gyro": 3, "accel": 3}).items():
                imu_plan.append((g, enc))
                encs.append(enc)
        else:
            _check_groups(imap, i, sm, ["events"], "AEDAT events")
            gm = sm.groups["events"]
            ev_enc = NativeEvents(
                sm.sensor,
                "events",
                gm.input or "events",
                gm.scale,
                types["events"]["width"],
                round(sm.window_ms * 1e6),
            )
            encs.append(ev_enc)
    imus, events = [], []
    for p in packets:
        if "imus" in p:
            imus.append(p["imus"])
        elif "events" in p:
            events.append(p["events"])
        else:
            Skips.add(
                skips.unknown_types, f"aedat:{streams.get(p.get('stream_id'), {}).get('type', '?')}"
            )
    if imu_plan and imus:
        imu = np.concatenate(imus)
        t = imu["t"].astype(np.int64) * 1000
        cols = {
            "gyro": (["gyroscope_x", "gyroscope_y", "gyroscope_z"], DEG),
            "accel": (["accelerometer_x", "accelerometer_y", "accelerometer_z"], G0_M_S2),
        }
        for g, enc in imu_plan:
            names, factor = cols[g]
            enc.samples(t, np.stack([imu[c].astype(np.float64) for c in names], axis=1) * factor)
    if ev_enc is not None and events:
        ev = np.concatenate(events)
        ev_enc.events(ev["t"].astype(np.int64) * 1000, ev["x"], ev["y"], ev["on"])
    return encs


# --------------------------------------------------------------------------- EVT3


def read_evt3(path: Path, imap: ImportMap, skips: Skips) -> list[GroupEncoder]:
    """A Prophesee EVT 3.0 ``.raw`` file, decoded by the event-camera driver's decoder."""
    from spikefuse.drivers.evt3 import EVENT_DTYPE, iter_events, read_header

    header = read_header(path)
    encs: list[GroupEncoder] = []
    for i, sm in enumerate(imap.streams):
        if sm.topic != "events":
            raise ConfigError(
                f"stream {sm.topic!r} is not in an EVT3 file (map name: events)",
                _where(imap, i, "topic"),
            )
        _check_groups(imap, i, sm, ["events"], "EVT3 events")
        width = sm.width or header.width
        height = sm.height or header.height
        if width is None or height is None:
            raise ConfigError(
                f"{path}: the EVT3 header gives no geometry: set width and height",
                _where(imap, i, "width"),
            )
        gm = sm.groups["events"]
        if not gm.enabled:
            continue
        enc = NativeEvents(
            sm.sensor, "events", gm.input or "events", gm.scale, width, round(sm.window_ms * 1e6)
        )
        ev = np.concatenate([np.empty(0, EVENT_DTYPE), *iter_events(path)])
        ok = (ev["x"] < width) & (ev["y"] < height)
        if not ok.all():
            Skips.add(
                skips.bad_messages, f"evt3: events outside {width}x{height}", int((~ok).sum())
            )
            ev = ev[ok]
        enc.events(ev["t"].astype(np.int64) * 1000, ev["x"], ev["y"], ev["p"].astype(bool))
        encs.append(enc)
    return encs


# --------------------------------------------------------------------------- tables


def read_table(path: Path, imap: ImportMap, skips: Skips) -> list[GroupEncoder]:
    mapping = None
    preset = None
    if imap.table is not None:
        if imap.table in PRESETS:
            preset = imap.table
        else:
            mapping = load_mapping(imap.table)
    table = load_table(path, mapping, preset)
    out: list[GroupEncoder] = []
    cols = {**table.groups, **{k: v.reshape(len(table), -1) for k, v in table.extra.items()}}
    for i, sm in enumerate(imap.streams):
        _check_groups(imap, i, sm, sorted(cols), f"table {path.name}")
        for g, gm in sm.groups.items():
            if gm.enabled:
                enc = GroupEncoder(sm.sensor, g, gm.input or g, gm.scale, cols[g].shape[1])
                enc.samples(table.t_ns, cols[g])
                out.append(enc)
    return out
