"""``spikefuse recover IN -o OUT``: an indexed copy of an unfinished (or finished) log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spikefuse.errors import LogFileError
from spikefuse.recording.mcapio import LogWriter, open_log


@dataclass
class RecoverResult:
    n_messages: int
    was_indexed: bool
    truncated_bytes: int
    problem: str


def recover(src: str | Path, dst: str | Path) -> RecoverResult:
    """Copy every readable message of ``src`` (same topics, times, sequences, payloads and
    metadata) into a new, finished, indexed file ``dst``."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise LogFileError(f"{dst}: recover needs an output different from its input")
    log = open_log(src)
    with LogWriter(dst, flush_interval_s=None) as w:
        for name, data in log.metadata.items():
            w.add_metadata(name, data)
        w.add_metadata(
            "spikefuse.recover",
            {"source": str(src), "was_indexed": str(log.indexed), "problem": log.problem},
        )
        for m in log.messages:
            w.write(m.topic, m.payload, m.log_time_ns, m.publish_time_ns, m.sequence)
    return RecoverResult(len(log.messages), log.indexed, log.truncated_bytes, log.problem)
