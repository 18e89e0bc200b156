"""``spikefuse echo TOPIC [--endpoint E ...] [--count N]``: print decoded bus messages, one
line each. TOPIC is a prefix (``sensor/imu``, ``motor/``, ``""`` for everything). Without
``--endpoint`` it connects to every ``*.sock`` in ``--run-dir``. Rejected payloads are
counted (and logged, rate-limited), never fatal; the counts are printed to stderr at exit."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MAX_SHOWN = 16
"""Array elements printed per field before eliding (``--full`` prints all)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("echo", help="print decoded bus messages of a topic (one line each)")
    p.add_argument("topic", help='topic prefix, e.g. sensor/imu, motor/, status/ or "" for all')
    p.add_argument(
        "--endpoint", action="append", default=[], help="endpoint to connect to (repeatable)"
    )
    p.add_argument(
        "--run-dir", type=Path, default=None, help="without --endpoint: every *.sock here"
    )
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N messages")
    p.add_argument(
        "--duration-s", type=float, default=None, metavar="S", help="exit after S seconds"
    )
    p.add_argument("--bind", action="store_true", help="bind the endpoints (fan-in) instead")
    p.add_argument(
        "--security", type=Path, default=None, metavar="YAML", help="SecurityConfig YAML file"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--full", action="store_true", help="print whole arrays")
    p.set_defaults(func=run)


def _arr(a: np.ndarray | None, full: bool) -> str:
    if a is None:
        return "-"
    items = a.tolist()
    if not full and len(items) > MAX_SHOWN:
        shown = ",".join(repr(v) for v in items[:MAX_SHOWN])
        return f"[{shown},...+{len(items) - MAX_SHOWN}]"
    return "[" + ",".join(repr(v) for v in items) + "]"


def format_line(msg: Any, full: bool = False) -> str:
    """One human-readable line for a decoded message."""
    from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, topic_of

    head = f"{topic_of(msg).decode()} {type(msg).__name__} seq={msg.seq} t_ns={msg.t_ns}"
    if isinstance(msg, EventBatch):
        return (
            f"{head} input={msg.input} scale={msg.scale:g} n={msg.n_events} "
            f"channels={_arr(msg.channels, full)} counts={_arr(msg.counts, full)}"
            + (f" dt_ns={_arr(msg.dt_ns, full)}" if msg.dt_ns is not None else "")
        )
    if isinstance(msg, Heartbeat):
        return f"{head} state={msg.state} detail={json.dumps(msg.detail)}"
    if isinstance(msg, MotorCommand):
        return f"{head} cause_t_ns={msg.cause_t_ns} values={_arr(msg.values, full)}"
    return f"{head} metrics={json.dumps(msg.metrics, default=repr, sort_keys=True)}"


def to_json(msg: Any) -> dict[str, Any]:
    """A JSON-able dict of a decoded message (arrays as lists)."""
    out: dict[str, Any] = {"kind": type(msg).__name__, "topic": _topic(msg)}
    for name in msg.__slots__:
        v = getattr(msg, name)
        out[name] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


def _topic(msg: Any) -> str:
    from spikefuse.protocol import topic_of

    return topic_of(msg).decode()


def _endpoints(args: argparse.Namespace) -> list[str]:
    from spikefuse.errors import ConfigError
    from spikefuse.sdk.config import DEFAULT_RUN_DIR

    if args.endpoint:
        return list(args.endpoint)
    run_dir = args.run_dir or DEFAULT_RUN_DIR
    from spikefuse.transport.unix import endpoint_of_socket_file

    endpoints = [endpoint_of_socket_file(p) for p in sorted(Path(run_dir).glob("*.sock"))]
    if not endpoints:
        raise ConfigError(f"no *.sock endpoints in {run_dir}; give --run-dir or --endpoint")
    return endpoints


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError
    from spikefuse.sdk.timing import StopSignal
    from spikefuse.transport.config import load_security
    from spikefuse.transport.subscriber import Subscriber

    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count: expected >= 1, found {args.count}")
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s: expected > 0, found {args.duration_s}")
    security = load_security(args.security)
    endpoints = _endpoints(args)
    n_shown = 0
    deadline_s = None if args.duration_s is None else time.monotonic() + args.duration_s
    out = sys.stdout
    with (
        StopSignal() as stop,
        Subscriber(endpoints, [args.topic], bind=args.bind, security=security, name="echo") as sub,
    ):
        while not stop.requested and (args.count is None or n_shown < args.count):
            wait_s = 0.25
            if deadline_s is not None:
                wait_s = min(wait_s, deadline_s - time.monotonic())
                if wait_s <= 0:
                    break
            for msg in sub.recv_many(wait_s):
                line = (
                    json.dumps(to_json(msg), default=repr)
                    if args.json
                    else format_line(msg, args.full)
                )
                out.write(line + "\n")
                n_shown += 1
                if args.count is not None and n_shown >= args.count:
                    break
            out.flush()
        st = sub.stats
    if st.n_rejected or st.n_seq_missing:
        print(
            f"echo: {st.n_received} received, rejected {st.rejected}, "
            f"missing by sequence number {st.seq_gaps}",
            file=sys.stderr,
        )
    if args.count is not None and n_shown < args.count:
        return 1
    return 0
