"""MCAP files of spikefuse messages: :class:`LogWriter` and :func:`open_log`.

Layout of a spikefuse MCAP file:

* one channel per bus topic (``sensor/imu``, ``motor/out``, ...), message encoding
  ``msgpack``; each message's data is the wire payload, byte for byte;
* one schema, named ``spikefuse.protocol.v<N>`` (the protocol version), shared by every
  channel;
* ``log_time`` = receive time (recorder) or data time (import / offline replay),
  ``publish_time`` = acquisition time (``t_ns`` of the message), ``sequence`` = the
  message's ``seq`` (modulo 2**32, MCAP's field width);
* zstd chunks, flushed to the OS at least every ``flush_interval_s`` (a SIGKILL loses at
  most that much), and a summary + index written by :meth:`LogWriter.close`.

:func:`open_log` reads finished files through their index and unfinished ones (crashed
recorder, truncated copy) by scanning records up to the last complete chunk.
"""

from __future__ import annotations

import io
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Chunk, DataEnd, Footer, Message, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType, Writer

from spikefuse.errors import LogFileError
from spikefuse.protocol import PROTOCOL_VERSION

MESSAGE_ENCODING = "msgpack"
SCHEMA_NAME = f"spikefuse.protocol.v{PROTOCOL_VERSION}"
SCHEMA_ENCODING = "spikefuse-msgpack"
SCHEMA_TEXT = (
    f"spikefuse wire protocol version {PROTOCOL_VERSION}: msgpack array "
    "[version, kind, fields...]; kinds 1=EventBatch 2=Heartbeat 3=MotorCommand 4=Status "
    "(see spikefuse/protocol.py and docs/protocol.md)"
).encode()
PROFILE = "spikefuse"
MAGIC = b"\x89MCAP0\r\n"
SEQ_MOD = 1 << 32
DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_FLUSH_INTERVAL_S = 1.0


class LogWriter:
    """Writes spikefuse payloads into an MCAP file (context manager).

    ``write(topic, payload, log_time_ns, publish_time_ns, seq)`` appends one message.
    The current chunk is closed and handed to the OS when it exceeds ``chunk_bytes`` or
    when ``flush_interval_s`` of monotonic time passed since the last flush (checked on
    every write and by :meth:`maybe_flush`, which an idle recorder calls from its loop).
    ``flush_interval_s=None`` disables time-based flushing (offline tools: output then
    depends only on the data, so it is byte-identical across runs). ``exclusive=True``
    refuses to replace an existing file (:class:`LogFileError`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        metadata: dict[str, str] | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        flush_interval_s: float | None = DEFAULT_FLUSH_INTERVAL_S,
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        try:
            # exclusive: never replace an existing file (the recorder: a restart must not
            # destroy what the previous run wrote)
            self._fh: BinaryIO = open(self.path, "xb" if exclusive else "wb")  # noqa: SIM115
        except FileExistsError:
            raise LogFileError(f"{self.path}: exists already (not replaced)") from None
        except OSError as exc:
            raise LogFileError(f"{self.path}: cannot create: {exc.strerror}") from None
        self._writer = Writer(self._fh, chunk_size=chunk_bytes, compression=CompressionType.ZSTD)
        self._writer.start(profile=PROFILE, library="spikefuse")
        self._schema_id = self._writer.register_schema(SCHEMA_NAME, SCHEMA_ENCODING, SCHEMA_TEXT)
        self._channels: dict[str, int] = {}
        self.flush_interval_s = flush_interval_s
        self._last_flush_s = time.monotonic()
        self.n_messages = 0
        self.n_flushes = 0
        self.closed = False
        if metadata:
            self._writer.add_metadata("spikefuse", dict(metadata))
        self._writer.flush()  # header, schema and metadata reach the file at once

    def channel_id(self, topic: str) -> int:
        cid = self._channels.get(topic)
        if cid is None:
            cid = self._writer.register_channel(
                topic,
                MESSAGE_ENCODING,
                self._schema_id,
                {"protocol_version": str(PROTOCOL_VERSION)},
            )
            self._channels[topic] = cid
        return cid

    def write(
        self, topic: str, payload: bytes, log_time_ns: int, publish_time_ns: int, seq: int
    ) -> None:
        cid = self._channels.get(topic)
        if cid is None:
            cid = self.channel_id(topic)
        # MCAP times are uint64: acquisition times on a monotonic clock are >= 0
        self._writer.add_message(
            cid, max(0, int(log_time_ns)), payload, max(0, int(publish_time_ns)), int(seq) % SEQ_MOD
        )
        self.n_messages += 1
        if self.flush_interval_s is not None:
            self.maybe_flush()

    @property
    def flush_due_s(self) -> float | None:
        """Monotonic time at which the next time-based flush is due (None: never)."""
        if self.flush_interval_s is None:
            return None
        return self._last_flush_s + self.flush_interval_s

    def maybe_flush(self) -> bool:
        """Close the chunk in progress and flush to the OS if the flush interval is over."""
        if self.flush_interval_s is None:
            return False
        now_s = time.monotonic()
        if now_s - self._last_flush_s < self.flush_interval_s:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        self._writer.flush()
        self._last_flush_s = time.monotonic()
        self.n_flushes += 1

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self._writer.add_metadata(name, {str(k): str(v) for k, v in data.items()})

    @property
    def bytes_written(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        """Write the summary and index and close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.finish()
        finally:
            self._fh.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class LogMessage:
    """One stored message: its topic, MCAP times and sequence, and the wire payload."""

    topic: str
    log_time_ns: int
    publish_time_ns: int
    sequence: int
    payload: bytes


@dataclass
class LogFile:
    """A read spikefuse MCAP file.

    ``indexed``: the file has a summary with chunk indexes (finished cleanly).
    ``truncated_bytes``: bytes at the end that did not form a complete record (0 for a
    finished file). ``messages`` are in file order (log-time order for our writers)."""

    path: Path
    indexed: bool
    messages: list[LogMessage]
    topics: list[str]
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    schema_names: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    problem: str = ""

    def select(
        self,
        topics: list[str] | None = None,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> list[LogMessage]:
        """Messages whose topic starts with one of ``topics`` (None/[""]: all) and whose
        log time lies in ``[start_s, end_s]`` seconds after the first message."""
        msgs = self.messages
        if topics and "" not in topics:
            prefixes = tuple(topics)
            msgs = [m for m in msgs if m.topic.startswith(prefixes)]
        if (start_s is not None or end_s is not None) and self.messages:
            t0 = self.messages[0].log_time_ns
            lo = t0 + round((start_s or 0.0) * 1e9)
            hi = None if end_s is None else t0 + round(end_s * 1e9)
            msgs = [m for m in msgs if m.log_time_ns >= lo and (hi is None or m.log_time_ns <= hi)]
        return msgs


def _check_magic(path: Path, fh: BinaryIO) -> int:
    size = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    head = fh.read(len(MAGIC))
    if len(head) < len(MAGIC):
        raise LogFileError(f"{path}: not an MCAP file ({size} bytes, shorter than the magic)")
    if head != MAGIC:
        raise LogFileError(f"{path}: not an MCAP file (bad magic {head[:8]!r})")
    fh.seek(0)
    return size


def open_log(path: str | Path) -> LogFile:
    """Read every message of ``path``. Finished files are read through their summary;
    unfinished or damaged ones are scanned record by record up to the first incomplete
    or corrupt one (what was readable is returned, ``problem`` says what stopped the
    scan). Raises :class:`LogFileError` for a missing file or one that is not MCAP."""
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LogFileError(f"{path}: cannot open: {exc.strerror}") from None
    with fh:
        size = _check_magic(path, fh)
        indexed = _has_summary(fh, size)
        fh.seek(0)
        if indexed:
            try:
                return _read_indexed(path, fh)
            except (McapError, struct.error, ValueError, EOFError, KeyError):
                fh.seek(0)  # a damaged index: fall back to scanning the records
        return _scan(path, fh, size)


def is_finished(path: str | Path) -> bool:
    """True if ``path`` ends with a footer pointing at a summary (a cleanly closed file);
    reads only the last bytes."""
    try:
        with open(path, "rb") as fh:
            return _has_summary(fh, fh.seek(0, io.SEEK_END))
    except OSError:
        return False


def _has_summary(fh: BinaryIO, size: int) -> bool:
    if size < 2 * len(MAGIC) + 29:
        return False
    fh.seek(size - len(MAGIC))
    if fh.read(len(MAGIC)) != MAGIC:
        return False
    fh.seek(size - len(MAGIC) - 29)
    rec = fh.read(29)
    if rec[0] != 0x02:  # footer opcode
        return False
    summary_start = struct.unpack_from("<Q", rec, 9)[0]
    return summary_start > 0


def _read_indexed(path: Path, fh: BinaryIO) -> LogFile:
    reader = make_reader(fh)
    summary = reader.get_summary()
    msgs = [
        LogMessage(ch.topic, m.log_time, m.publish_time, m.sequence, m.data)
        for _sch, ch, m in reader.iter_messages(log_time_order=False)
    ]
    metadata = {md.name: dict(md.metadata) for md in reader.iter_metadata()}
    topics = sorted({c.topic for c in summary.channels.values()}) if summary else []
    schemas = sorted({s.name for s in summary.schemas.values()}) if summary else []
    return LogFile(path, True, msgs, topics, metadata, schemas)


def _scan(path: Path, fh: BinaryIO, size: int) -> LogFile:
    channels: dict[int, str] = {}
    schemas: list[str] = []
    metadata: dict[str, dict[str, str]] = {}
    msgs: list[LogMessage] = []
    problem = "no footer: the file was not finished (recorder killed or file truncated)"
    good_end = 0
    reader = StreamReader(fh, skip_magic=False, emit_chunks=True)
    try:
        for rec in reader.records:
            if isinstance(rec, Chunk):
                for sub in breakup_chunk(rec, validate_crc=True):
                    _take(sub, channels, schemas, msgs)
            elif isinstance(rec, DataEnd | Footer):
                problem = (
                    "the data section is complete but the summary/footer is damaged or truncated"
                )
                break
            else:
                _take(rec, channels, schemas, msgs)
                if type(rec).__name__ == "Metadata":
                    metadata[rec.name] = dict(rec.metadata)
            good_end = fh.tell()
    except (McapError, struct.error, ValueError, EOFError, KeyError, zstandard.ZstdError) as exc:
        problem = (
            f"unfinished or damaged file: records readable up to byte {good_end}, "
            f"scan stopped there ({type(exc).__name__}: {exc})"
        )
    return LogFile(
        path,
        False,
        msgs,
        sorted(set(channels.values())),
        metadata,
        sorted(set(schemas)),
        truncated_bytes=max(0, size - good_end),
        problem=problem,
    )


def _take(
    rec: object, channels: dict[int, str], schemas: list[str], msgs: list[LogMessage]
) -> None:
    if isinstance(rec, Message):
        topic = channels.get(rec.channel_id)
        if topic is None:
            raise ValueError(f"message on unknown channel {rec.channel_id}")
        msgs.append(LogMessage(topic, rec.log_time, rec.publish_time, rec.sequence, rec.data))
    elif isinstance(rec, Channel):
        channels[rec.id] = rec.topic
    elif isinstance(rec, Schema):
        schemas.append(rec.name)
