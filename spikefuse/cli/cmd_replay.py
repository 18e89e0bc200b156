"""``spikefuse replay FILE``: live onto the bus (original timing) or ``--offline`` through
an engine into an output log.

An unfinished FILE (its recorder was killed, or a truncated copy) is replayed up to its last
complete chunk: a warning on stderr names the file, how many messages were read and how
many bytes were left unread, the JSON summary carries ``n_read``, ``file_finished`` and
``unread_bytes``, and the exit code stays 0 (what was read is valid data). ``--strict``
refuses such a file instead (exit 1)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from spikefuse.errors import ConfigError, LogFileError

if TYPE_CHECKING:
    from spikefuse.recording.mcapio import LogFile


def _parse_map(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--map-input expects old=new, found {item!r}")
        out[old] = new
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay an MCAP log live onto the bus or offline",
        description="Replay an MCAP log live onto the bus with its original timing, or "
        "--offline through a graph into an output log. An unfinished log is replayed up to "
        "its last complete chunk with a warning (exit 0; --strict: exit 1).",
    )
    p.add_argument("file", help="the .mcap log to replay (from record, import or replay)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse an unfinished (truncated) log instead of replaying what is readable",
    )
    p.add_argument("--offline", action="store_true", help="run the engine directly (no bus)")
    p.add_argument("--graph", metavar="FILE", help="graph file (.yaml/.npz) for --offline")
    p.add_argument("-o", "--output", metavar="OUT", help="output .mcap for --offline")
    p.add_argument(
        "--map-input",
        action="append",
        metavar="OLD=NEW",
        help="--offline: feed the stream of input OLD to graph input NEW (repeatable)",
    )
    p.add_argument("--no-inputs", action="store_true", help="--offline: do not copy inputs")
    p.add_argument(
        "--status-period",
        type=float,
        default=1.0,
        metavar="S",
        help="--offline: seconds of log time between Status messages",
    )
    speed = p.add_mutually_exclusive_group()
    speed.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="X",
        help="live: speed factor (2 = twice as fast)",
    )
    speed.add_argument("--fast", action="store_true", help="live: as fast as subscribers take it")
    p.add_argument("--loop", action="store_true", help="live: repeat until stopped")
    p.add_argument(
        "--topics",
        nargs="*",
        default=None,
        metavar="PREFIX",
        help="topic prefixes (default sensor/)",
    )
    p.add_argument(
        "--start",
        type=float,
        default=None,
        metavar="S",
        help="begin S seconds after the first message",
    )
    p.add_argument(
        "--end", type=float, default=None, metavar="S", help="end S seconds after the first message"
    )
    p.add_argument("--endpoint", metavar="URL", help="live: bus endpoint to publish on (bound)")
    p.add_argument(
        "--connect", action="store_true", help="live: connect to --endpoint instead of binding it"
    )
    p.add_argument(
        "--security", default=None, metavar="YAML", help="live: SecurityConfig YAML file"
    )
    p.add_argument("--keep-time", action="store_true", help="live: send stored bytes unchanged")
    p.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="live: wait (up to 30 s) for N subscribers of the sensor data first",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    topics = args.topics if args.topics is not None else ["sensor/"]
    log = _open(args.file, args.strict)
    if args.offline:
        return _offline(args, log, topics)
    return _live(args, log, topics)


def _open(path: str, strict: bool) -> LogFile:
    """The log, with a warning (or, ``strict``, an error) when it is unfinished."""
    from spikefuse.recording.mcapio import open_log

    log = open_log(path)
    if log.indexed:
        return log
    what = (
        f"{path} is unfinished ({log.problem}); {len(log.messages)} messages read, "
        f"{log.truncated_bytes} bytes at the end unreadable"
    )
    if strict:
        raise LogFileError(f"{what}; --strict refuses it (`spikefuse recover` makes a copy)")
    print(f"spikefuse replay: warning: {what}: replaying those", file=sys.stderr, flush=True)
    return log


def _file_fields(log: LogFile) -> dict:
    return {
        "n_read": len(log.messages),
        "file_finished": log.indexed,
        "unread_bytes": log.truncated_bytes,
    }


def _offline(args: argparse.Namespace, log: LogFile, topics: list[str]) -> int:
    from spikefuse.recording.offline import replay_offline

    if not args.graph:
        raise ConfigError("replay --offline needs --graph")
    if not args.output:
        raise ConfigError("replay --offline needs -o OUT.mcap")
    res = replay_offline(
        log,
        args.graph,
        args.output,
        map_input=_parse_map(args.map_input),
        topics=topics,
        start_s=args.start,
        end_s=args.end,
        status_period_s=args.status_period,
        copy_inputs=not args.no_inputs,
    )
    print(json.dumps({**_file_fields(log), **res.summary()}), file=sys.stderr)
    return 0


def _live(args: argparse.Namespace, log: LogFile, topics: list[str]) -> int:
    from spikefuse.recording.live import replay_live
    from spikefuse.sdk.timing import StopSignal
    from spikefuse.transport.config import load_security
    from spikefuse.transport.publisher import Publisher

    if not args.endpoint:
        raise ConfigError("live replay needs --endpoint (or use --offline)")
    if args.map_input:
        raise ConfigError("--map-input applies to --offline replay only")
    security = load_security(args.security)
    with (
        StopSignal() as stop,
        Publisher(args.endpoint, bind=not args.connect, security=security) as pub,
    ):
        # subscribers of the recording's sensor data (a core's status subscription to the
        # same socket is not one more subscriber)
        data = [t.encode() for t in log.topics if t.startswith("sensor/")]
        n = args.wait_subscribers
        if n and not pub.wait_for_subscribers(n, 30.0, topics=data):
            print(
                f"replay: fewer than {n} subscribers within 30 s, starting anyway", file=sys.stderr
            )
        res = replay_live(
            log,
            pub,
            stop,
            rate=args.rate,
            fast=args.fast,
            loop=args.loop,
            topics=topics,
            start_s=args.start,
            end_s=args.end,
            restamp=not args.keep_time,
        )
    summary = {
        **_file_fields(log),
        "n_sent": res.n_sent,
        "n_loops": res.n_loops,
        "n_ends_announced": res.n_ends_announced,
        "max_late_ms": res.max_late_ns / 1e6,
        "mean_late_ms": res.mean_late_ns / 1e6,
        "duration_s": res.duration_s,
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0
