"""``spikefuse replay FILE``: live onto the bus (original timing) or ``--offline`` through
an engine into an output log."""

from __future__ import annotations

import argparse
import json
import sys

from spikefuse.errors import ConfigError


def _parse_map(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ConfigError(f"--map-input expects old=new, found {item!r}")
        out[old] = new
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay an MCAP log live onto the bus or offline")
    p.add_argument("file")
    p.add_argument("--offline", action="store_true", help="run the engine directly (no bus)")
    p.add_argument("--graph", help="graph file (.yaml/.npz) for --offline")
    p.add_argument("-o", "--output", help="output .mcap for --offline")
    p.add_argument("--map-input", action="append", metavar="OLD=NEW", help="rename an input")
    p.add_argument("--no-inputs", action="store_true", help="--offline: do not copy inputs")
    p.add_argument("--status-period", type=float, default=1.0, help="seconds between Status")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="speed factor (live)")
    speed.add_argument("--fast", action="store_true", help="as fast as possible (live)")
    p.add_argument("--loop", action="store_true", help="repeat (live)")
    p.add_argument("--topics", nargs="*", default=None, help="topic prefixes (default sensor/)")
    p.add_argument("--start", type=float, default=None, help="seconds after the first message")
    p.add_argument("--end", type=float, default=None, help="seconds after the first message")
    p.add_argument("--endpoint", help="bus endpoint to publish on (live)")
    p.add_argument("--connect", action="store_true", help="connect instead of bind (live)")
    p.add_argument("--security", default=None, metavar="YAML", help="SecurityConfig YAML (live)")
    p.add_argument("--keep-time", action="store_true", help="live: send stored bytes unchanged")
    p.add_argument(
        "--wait-subscribers", type=int, default=0, help="live: wait for N subscribers first"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    topics = args.topics if args.topics is not None else ["sensor/"]
    if args.offline:
        return _offline(args, topics)
    return _live(args, topics)


def _offline(args: argparse.Namespace, topics: list[str]) -> int:
    from spikefuse.recording.offline import replay_offline

    if not args.graph:
        raise ConfigError("replay --offline needs --graph")
    if not args.output:
        raise ConfigError("replay --offline needs -o OUT.mcap")
    res = replay_offline(
        args.file,
        args.graph,
        args.output,
        map_input=_parse_map(args.map_input),
        topics=topics,
        start_s=args.start,
        end_s=args.end,
        status_period_s=args.status_period,
        copy_inputs=not args.no_inputs,
    )
    print(json.dumps(res.summary()), file=sys.stderr)
    return 0


def _live(args: argparse.Namespace, topics: list[str]) -> int:
    from spikefuse.bus import Publisher, load_security
    from spikefuse.recording.live import replay_live
    from spikefuse.sdk.timing import StopSignal

    if not args.endpoint:
        raise ConfigError("live replay needs --endpoint (or use --offline)")
    if args.map_input:
        raise ConfigError("--map-input applies to --offline replay only")
    security = load_security(args.security)
    with (
        StopSignal() as stop,
        Publisher(args.endpoint, bind=not args.connect, security=security) as pub,
    ):
        if args.wait_subscribers and not pub.wait_for_subscribers(args.wait_subscribers, 30.0):
            print("replay: no subscriber within 30 s, starting anyway", file=sys.stderr)
        res = replay_live(
            args.file,
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
        "n_sent": res.n_sent,
        "n_loops": res.n_loops,
        "max_late_ms": res.max_late_ns / 1e6,
        "mean_late_ms": res.mean_late_ns / 1e6,
        "duration_s": res.duration_s,
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0
