"""The bus recorder: subscribes to topics and writes what arrives into MCAP files.

Payloads are stored byte for byte; each is validated by the protocol decoder first (bad
ones are counted in ``n_rejected`` and not stored). ``log_time`` is the receive time on
CLOCK_MONOTONIC (the clock drivers stamp ``t_ns`` with), so ``log_time - publish_time`` is
the bus latency. A chunk reaches the OS at least every ``flush_interval_s`` (default 1 s;
``spikefuse record --flush-interval 0.1`` bounds what a SIGKILL loses to ~100 ms, at a
cost measured by ``spikefuse bench replay``, see docs/benchmarks.md); a stop
request (SIGINT/SIGTERM through :class:`~spikefuse.sdk.timing.StopSignal`) finishes the file with its index.

A recorder never replaces a file: if ``out_path`` (or a split part) exists already, e.g.
written by a recorder that was killed and restarted under ``spikefuse launch``, it is kept
as it is and the recording continues into the next free part name (:func:`split_path`),
with a warning that names both files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from spikefuse.errors import ConfigError, LogFileError
from spikefuse.protocol import PROTOCOL_VERSION, Decoder, EventBatch, stream_of
from spikefuse.recording.mcapio import DEFAULT_FLUSH_INTERVAL_S, LogWriter, is_finished
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.seq import SeqTracker
from spikefuse.transport.subscriber import Subscriber, check_frames

log = logging.getLogger(__name__)

MAX_POLL_S = 0.1
"""Longest a recorder waits on its socket before re-checking the stop flag and flush."""
MAX_DRAIN = 4096


@dataclass
class RecordStats:
    n_messages: int = 0
    n_events: int = 0
    n_rejected: int = 0
    n_bytes_in: int = 0
    seq_gaps: dict[str, int] = field(default_factory=dict)
    """stream -> messages missing by sequence number (the recorder's ``SeqTracker``)"""
    files: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """existing files found at the output names: left untouched, recording continued after"""

    @property
    def n_seq_missing(self) -> int:
        return sum(self.seq_gaps.values())


def split_path(path: Path, index: int) -> Path:
    """``run.mcap`` -> ``run_000.mcap``, ``run_001.mcap``, ... (used when splitting)."""
    return path.with_name(f"{path.stem}_{index:03d}{path.suffix or '.mcap'}")


class Recorder:
    """Records ``topics`` (prefixes; ``[""]`` = all) from ``endpoints`` into ``out_path``.

    With ``split_size_bytes`` or ``split_duration_s`` the output is a series of files
    (:func:`split_path`), each finished with its own index."""

    def __init__(
        self,
        out_path: str | Path,
        endpoints: list[str],
        topics: list[str] | None = None,
        *,
        bind: bool = False,
        hwm: int = 1_000_000,
        security: SecurityConfig | None = None,
        split_size_bytes: int | None = None,
        split_duration_s: float | None = None,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    ) -> None:
        if split_size_bytes is not None and split_size_bytes < 4096:
            raise ConfigError(f"split size must be >= 4096 bytes, found {split_size_bytes}")
        if split_duration_s is not None and not split_duration_s > 0:
            raise ConfigError(f"split duration must be > 0 s, found {split_duration_s}")
        if not flush_interval_s > 0:
            raise ConfigError(f"flush interval must be > 0 s, found {flush_interval_s}")
        self.out_path = Path(out_path)
        self.split = split_size_bytes is not None or split_duration_s is not None
        self.split_size_bytes = split_size_bytes
        self.split_duration_s = split_duration_s
        self.flush_interval_s = flush_interval_s
        self.decoder = Decoder("recorder")
        self.seq = SeqTracker()
        self.stats = RecordStats(seq_gaps=self.seq.gaps)  # the tracker's live counts
        self._sub = Subscriber(endpoints, topics or [""], bind=bind, hwm=hwm, security=security)
        self.endpoints = self._sub.endpoints
        self._writer: LogWriter | None = None
        self._file_start_s = 0.0
        self._index = 0

    # ------------------------------------------------------------------ files
    def _candidate(self) -> Path:
        if self.split or self._index > 0:
            return split_path(self.out_path, self._index)
        return self.out_path

    def _create(self, meta: dict[str, str]) -> LogWriter:
        """A writer on the next output name that does not exist yet (never replaces one)."""
        while True:
            path = self._candidate()
            self._index += 1
            if path.exists():
                self._keep(path)
                continue
            meta["split_index"] = str(self._index - 1)
            try:
                return LogWriter(
                    path, metadata=meta, flush_interval_s=self.flush_interval_s, exclusive=True
                )
            except LogFileError:
                if not path.exists():  # not a race with another writer: a real error
                    raise
                self._keep(path)

    def _keep(self, path: Path) -> None:
        state = (
            "finished"
            if is_finished(path)
            else "unfinished (its recorder was killed?); `spikefuse recover` indexes it"
        )
        self.stats.kept.append(str(path))
        log.warning("%s exists already, %s: kept as it is, not replaced", path, state)

    def _open_next(self) -> LogWriter:
        meta = {
            "tool": "spikefuse record",
            "protocol_version": str(PROTOCOL_VERSION),
            "log_time_clock": "CLOCK_MONOTONIC",
            "realtime_minus_monotonic_ns": str(time.time_ns() - time.monotonic_ns()),
        }
        n_kept = len(self.stats.kept)
        self._writer = self._create(meta)
        self._file_start_s = time.monotonic()
        path = self._writer.path
        self.stats.files.append(str(path))
        if len(self.stats.kept) > n_kept:
            log.warning("recording continues into %s (nothing was overwritten)", path)
        else:
            log.info("recording to %s", path)
        return self._writer

    def _maybe_split(self, writer: LogWriter) -> LogWriter:
        if not self.split:
            return writer
        too_big = (
            self.split_size_bytes is not None and writer.bytes_written >= self.split_size_bytes
        )
        too_long = (
            self.split_duration_s is not None
            and time.monotonic() - self._file_start_s >= self.split_duration_s
        )
        if too_big or too_long:
            writer.close()
            return self._open_next()
        return writer

    # ------------------------------------------------------------------ receiving
    def _store(self, writer: LogWriter, frames: list[bytes], recv_ns: int) -> None:
        msg = check_frames(self.decoder, frames)
        if msg is None:
            return
        topic, payload = frames
        self.seq.see(stream_of(msg), msg.seq)
        st = self.stats
        writer.write(topic.decode(), payload, recv_ns, msg.t_ns, msg.seq)
        st.n_messages += 1
        st.n_bytes_in += len(payload)
        if isinstance(msg, EventBatch):
            st.n_events += len(msg.channels)

    def _drain(self, writer: LogWriter, wait_s: float) -> None:
        for frames in self._sub.recv_frames(wait_s, MAX_DRAIN):
            self._store(writer, frames, time.monotonic_ns())

    def run(self, stop: StopSignal, duration_s: float | None = None) -> RecordStats:
        """Record until ``stop`` is set (or ``duration_s`` passed); always finishes the
        current file with its summary."""
        writer = self._open_next()
        end_s = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not stop.requested:
                now_s = time.monotonic()
                if end_s is not None and now_s >= end_s:
                    break
                # wake up when the next flush is due: a SIGKILL loses at most about one
                # flush interval of what arrived
                wait_s = min(MAX_POLL_S, writer.flush_due_s - now_s)
                if end_s is not None:
                    wait_s = min(wait_s, end_s - now_s)
                self._drain(writer, max(0.001, wait_s))
                writer.maybe_flush()
                writer = self._maybe_split(writer)
            self._drain(writer, 0.0)  # what already arrived is kept
        finally:
            self.stats.n_rejected = self.decoder.n_rejected
            self._finish(writer)
        return self.stats

    def _finish(self, writer: LogWriter) -> None:
        if writer.closed:
            return
        st = self.stats
        writer.add_metadata(
            "spikefuse.record_stats",
            {
                "n_messages": str(st.n_messages),
                "n_events": str(st.n_events),
                "n_rejected": str(st.n_rejected),
                "n_seq_missing": str(st.n_seq_missing),
            },
        )
        writer.close()

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
