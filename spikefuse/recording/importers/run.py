"""Dispatch an import and write the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikefuse.errors import ConfigError, LogFileError
from spikefuse.protocol import encode, topic_of
from spikefuse.recording.importers.config import ImportMap
from spikefuse.recording.importers.emit import GroupEncoder, merged
from spikefuse.recording.importers.sources import (
    Skips,
    read_aedat,
    read_evt3,
    read_ros,
    read_table,
    read_ulog,
)
from spikefuse.recording.mcapio import LogWriter
from spikefuse.recording.progress import Progress

READERS = {
    "ros": read_ros,
    "ulog": read_ulog,
    "aedat": read_aedat,
    "evt3": read_evt3,
    "table": read_table,
}


@dataclass
class ImportResult:
    format: str
    n_batches: int = 0
    n_events: int = 0
    streams: dict[str, dict] = field(default_factory=dict)
    unknown_types: dict[str, int] = field(default_factory=dict)
    unmapped_topics: dict[str, int] = field(default_factory=dict)
    bad_messages: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "format": self.format,
            "n_batches": self.n_batches,
            "n_events": self.n_events,
            "streams": self.streams,
            "unknown_types": self.unknown_types,
            "unmapped_topics": self.unmapped_topics,
            "bad_messages": self.bad_messages,
        }


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith((".bag", ".db3")):
        return "ros"
    if name.endswith(".mcap") and (path.parent / "metadata.yaml").is_file():
        return "ros"
    if name.endswith(".ulg"):
        return "ulog"
    if name.endswith(".aedat4"):
        return "aedat"
    if name.endswith(".raw"):
        return "evt3"  # Prophesee .raw; its header is checked to say EVT3
    if name.endswith((".csv", ".csv.gz", ".npz")):
        return "table"
    raise ConfigError(f"cannot tell the format of {path} from its name: set format: in the map")


def _rate_hz(enc: GroupEncoder) -> float | None:
    t = np.array([b.t_ns for b in enc.batches], np.int64)
    d = np.diff(t)
    d = d[d > 0]
    return float(1e9 / np.median(d)) if d.size else None


def import_log(
    src: str | Path, out: str | Path, imap: ImportMap, *, progress: bool | None = None
) -> ImportResult:
    src = Path(src)
    if not src.exists():
        raise LogFileError(f"{src}: no such file or directory")
    fmt = imap.format if imap.format != "auto" else detect_format(src)
    skips = Skips()
    encoders = READERS[fmt](src, imap, skips)
    batches = merged(encoders)
    res = ImportResult(
        fmt,
        unknown_types=skips.unknown_types,
        unmapped_topics=skips.unmapped_topics,
        bad_messages=skips.bad_messages,
    )
    meta = {"tool": "spikefuse import", "source": src.name, "format": fmt}
    with (
        LogWriter(out, metadata=meta, flush_interval_s=None) as w,
        Progress(len(batches), "import", enabled=progress) as bar,
    ):
        for b in batches:
            w.write(topic_of(b).decode(), encode(b), b.t_ns, b.t_ns, b.seq)
            bar.update()
    for e in encoders:
        c = e.counts
        res.streams[f"sensor/{e.sensor}/{e.input}"] = {
            "n_samples": c.n_samples,
            "n_batches": c.n_batches,
            "n_events": c.n_events,
            "n_skipped_nonfinite": c.n_skipped_nonfinite,
            "rate_hz": _rate_hz(e),
            "sample_rate_hz": c.sample_rate_hz,
        }
        res.n_batches += c.n_batches
        res.n_events += c.n_events
    return res
