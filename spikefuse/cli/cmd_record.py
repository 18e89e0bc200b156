"""``spikefuse record -o FILE.mcap --endpoint E [--topics ...]``: bus -> MCAP until
SIGINT/SIGTERM (or ``--duration``)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from spikefuse.errors import ConfigError
from spikefuse.recording.mcapio import DEFAULT_FLUSH_INTERVAL_S

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*$")
_SIZE_FACTOR = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size like 64M or 1G, found {text!r}")
    return int(float(m.group(1)) * _SIZE_FACTOR[m.group(2).lower()])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="record bus topics into an MCAP file",
        description="Record bus messages (validated, stored byte for byte with their "
        "receive time) into MCAP until SIGINT/SIGTERM or --duration; the file is then "
        "finished with its index. A killed recorder's file stays readable up to its last "
        "flush (spikefuse info / recover).",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .mcap file; an existing file is never replaced: the recording "
        "continues into the next free name FILE_001.mcap, FILE_002.mcap, ... (a restart "
        "under launch keeps what the killed recorder wrote)",
    )
    p.add_argument("--endpoint", action="append", required=True, help="bus endpoint (repeatable)")
    p.add_argument("--topics", nargs="*", default=None, help="topic prefixes (default: all)")
    p.add_argument("--bind", action="store_true", help="bind the endpoints (fan-in)")
    p.add_argument(
        "--split-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="start a new file FILE_NNN.mcap after SIZE (e.g. 64M, 1G)",
    )
    p.add_argument(
        "--split-duration",
        type=float,
        default=None,
        metavar="S",
        help="start a new file FILE_NNN.mcap every S seconds",
    )
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--flush-interval",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL_S,
        metavar="S",
        help="hand the data to the OS at least every S seconds (default %(default)g): a "
        "SIGKILL or crash loses at most about S seconds; 0.1 keeps the last 100 ms for a few "
        "%% more recorder CPU and file size (docs/benchmarks.md, `spikefuse bench replay`)",
    )
    p.add_argument(
        "--hwm", type=int, default=1_000_000, metavar="N", help="receive high-water mark (messages)"
    )
    p.add_argument("--security", default=None, metavar="YAML", help="SecurityConfig YAML file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.recording.recorder import Recorder
    from spikefuse.sdk.timing import StopSignal
    from spikefuse.transport.config import load_security

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration must be > 0, found {args.duration}")
    with (
        StopSignal() as stop,
        Recorder(
            args.output,
            args.endpoint,
            args.topics,
            bind=args.bind,
            hwm=args.hwm,
            security=load_security(args.security),
            split_size_bytes=args.split_size,
            split_duration_s=args.split_duration,
            flush_interval_s=args.flush_interval,
        ) as rec,
    ):
        print(f"recording {rec.endpoints} -> {args.output}", file=sys.stderr, flush=True)
        stats = rec.run(stop, args.duration)
    summary = {
        "files": stats.files,
        "kept_existing": stats.kept,
        "n_messages": stats.n_messages,
        "n_events": stats.n_events,
        "n_rejected": stats.n_rejected,
        "n_seq_missing": stats.n_seq_missing,
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0
