"""``spikefuse export FILE -o OUT.mcap --json``: JSON channels (with JSON schemas) that
Foxglove opens. EventBatches also carry ``reconstruction``: the integrated value of every
channel (``sum(counts)/scale``) after the batch, which is what a receiver holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from mcap.writer import CompressionType, Writer

from spikefuse.errors import ProtocolError
from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status, decode, stream_of
from spikefuse.recording.mcapio import open_log
from spikefuse.recording.progress import Progress

_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}


def _arr(item: dict) -> dict:
    return {"type": "array", "items": item}


SCHEMAS: dict[str, dict[str, Any]] = {
    "EventBatch": {
        "sensor": _STR,
        "seq": _INT,
        "t_ns": _INT,
        "input": _STR,
        "scale": _NUM,
        "channels": _arr(_INT),
        "counts": _arr(_INT),
        "dt_ns": _arr(_INT),
        "epoch_offset_ns": _INT,
        "reconstruction": _arr(_NUM),
    },
    "Heartbeat": {"sensor": _STR, "seq": _INT, "t_ns": _INT, "state": _STR, "detail": _STR},
    "MotorCommand": {
        "actuator": _STR,
        "seq": _INT,
        "t_ns": _INT,
        "cause_t_ns": _INT,
        "values": _arr(_NUM),
    },
    "Status": {"source": _STR, "seq": _INT, "t_ns": _INT, "metrics": {"type": "object"}},
}
SUFFIX = {"EventBatch": "", "Heartbeat": "/heartbeat", "MotorCommand": "", "Status": ""}


def _schema_bytes(kind: str) -> bytes:
    schema = {
        "title": f"spikefuse.{kind}",
        "type": "object",
        "properties": SCHEMAS[kind]
        | {"timestamp": {"type": "object", "properties": {"sec": _INT, "nsec": _INT}}},
    }
    return json.dumps(schema, sort_keys=True).encode()


class _Recon:
    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}

    def update(self, b: EventBatch) -> list[float]:
        key = stream_of(b)
        s = self.sums.get(key, np.zeros(0, np.int64))
        need = int(b.channels.max()) + 1 if b.channels.size else 0
        if need > s.size:
            s = np.concatenate((s, np.zeros(need - s.size, np.int64)))
        np.add.at(s, b.channels.astype(np.int64), b.counts.astype(np.int64))
        self.sums[key] = s
        return (s / b.scale).tolist() if s.size <= 4096 else []


def _as_json(msg: Any, recon: _Recon) -> dict[str, Any]:
    t = msg.t_ns
    base: dict[str, Any] = {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000}}
    if isinstance(msg, EventBatch):
        return base | {
            "sensor": msg.sensor,
            "seq": msg.seq,
            "t_ns": t,
            "input": msg.input,
            "scale": msg.scale,
            "channels": msg.channels.tolist(),
            "counts": msg.counts.tolist(),
            "dt_ns": [] if msg.dt_ns is None else msg.dt_ns.tolist(),
            "epoch_offset_ns": msg.epoch_offset_ns,
            "reconstruction": recon.update(msg),
        }
    if isinstance(msg, Heartbeat):
        return base | {
            "sensor": msg.sensor,
            "seq": msg.seq,
            "t_ns": t,
            "state": msg.state,
            "detail": msg.detail,
        }
    if isinstance(msg, MotorCommand):
        return base | {
            "actuator": msg.actuator,
            "seq": msg.seq,
            "t_ns": t,
            "cause_t_ns": msg.cause_t_ns,
            "values": msg.values.tolist(),
        }
    assert isinstance(msg, Status)
    return base | {"source": msg.source, "seq": msg.seq, "t_ns": t, "metrics": msg.metrics}


def export_json(
    src: str | Path, out: str | Path, *, progress: bool | None = None
) -> dict[str, int]:
    """Write ``out`` with one JSON channel per (topic, message kind); returns message counts
    per output topic (undecodable messages are counted under ``"<undecodable>"``)."""
    log = open_log(src)
    counts: dict[str, int] = {}
    recon = _Recon()
    with open(out, "wb") as fh, Progress(len(log.messages), "export", enabled=progress) as bar:
        w = Writer(fh, compression=CompressionType.ZSTD)
        w.start(profile="", library="spikefuse export")
        schema_ids = {
            k: w.register_schema(f"spikefuse.{k}", "jsonschema", _schema_bytes(k)) for k in SCHEMAS
        }
        channels: dict[str, int] = {}
        for m in log.messages:
            bar.update()
            try:
                msg = decode(m.payload)
            except ProtocolError:
                counts["<undecodable>"] = counts.get("<undecodable>", 0) + 1
                continue
            kind = type(msg).__name__
            topic = m.topic + SUFFIX[kind]
            cid = channels.get(topic)
            if cid is None:
                cid = channels[topic] = w.register_channel(topic, "json", schema_ids[kind])
            data = json.dumps(_as_json(msg, recon), separators=(",", ":")).encode()
            w.add_message(cid, m.log_time_ns, data, m.publish_time_ns, m.sequence)
            counts[topic] = counts.get(topic, 0) + 1
        w.finish()
    return counts
