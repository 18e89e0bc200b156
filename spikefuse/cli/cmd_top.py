"""``spikefuse top [--run-dir DIR | --endpoint E ...] [--once] [--duration S]``: a live
table per topic (messages/s, events/s, sequence gaps) and per process (from status
messages: events/s, drops, latency p50/p99, engine ops/s, restarts)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live table of topics and processes (from the bus)")
    p.add_argument("--run-dir", type=Path, default=None, help="connect to every *.sock here")
    p.add_argument("--endpoint", action="append", default=[], help="endpoint to watch (repeatable)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--period", type=float, default=1.0, metavar="S", help="refresh period")
    p.set_defaults(func=run)


@dataclass
class TopicStats:
    n_msgs: int = 0
    n_events: int = 0
    prev_msgs: int = 0
    prev_events: int = 0
    msgs_per_s: float = 0.0
    events_per_s: float = 0.0


@dataclass
class TopState:
    topics: dict[str, TopicStats] = field(default_factory=dict)
    status: dict[str, dict] = field(default_factory=dict)
    _driver_prev: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, msg) -> None:
        from spikefuse.protocol import EventBatch, Status, topic_of

        topic = topic_of(msg).decode()
        st = self.topics.setdefault(topic, TopicStats())
        st.n_msgs += 1
        if isinstance(msg, EventBatch):
            st.n_events += msg.n_events
        if isinstance(msg, Status):
            self.status[msg.source] = self._with_driver_rates(msg)

    def _with_driver_rates(self, msg) -> dict:
        """Drivers report counters (per-group ``n_events``, ``n_send_dropped``), not rates:
        derive events/s from two successive status messages of the same source."""
        m = msg.metrics
        groups = m.get("groups")
        if "rates" in m or not isinstance(groups, dict):
            return m
        total = sum(int(g.get("n_events", 0)) for g in groups.values() if isinstance(g, dict))
        prev = self._driver_prev.get(msg.source)
        self._driver_prev[msg.source] = (msg.t_ns, total)
        rate = None  # shown as '-' until a second status gives a rate
        if prev is not None and msg.t_ns > prev[0]:
            rate = (total - prev[1]) * 1e9 / (msg.t_ns - prev[0])
        return {**m, "rates": {"events_per_s": rate}, "drops": {"send": m.get("n_send_dropped", 0)}}

    def tick(self, dt_s: float) -> None:
        for st in self.topics.values():
            st.msgs_per_s = (st.n_msgs - st.prev_msgs) / dt_s
            st.events_per_s = (st.n_events - st.prev_events) / dt_s
            st.prev_msgs, st.prev_events = st.n_msgs, st.n_events


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render(state: TopState, gaps: dict[str, int]) -> str:
    out = [f"{'topic':<24} {'msgs/s':>10} {'events/s':>10} {'missing':>8}"]
    for topic in sorted(state.topics):
        st = state.topics[topic]
        miss = sum(n for s, n in gaps.items() if s == topic or s.startswith(topic + "/"))
        out.append(f"{topic:<24} {st.msgs_per_s:>10.1f} {st.events_per_s:>10.1f} {miss:>8}")
    out.append("")
    out.append(
        f"{'process':<16} {'state':<9} {'events/s':>10} {'drops':>7} {'p50 us':>8} {'p99 us':>8} "
        f"{'ops/s':>10} {'restarts':>8}"
    )
    restarts = {}
    for m in state.status.values():
        for name, p in (m.get("processes") or {}).items():
            restarts[name] = p.get("restarts", 0)
    for source in sorted(state.status):
        m = state.status[source]
        if "processes" in m:
            continue
        lat = m.get("latency_us") or {}
        drops = sum(v for v in (m.get("drops") or {}).values() if isinstance(v, int))
        out.append(
            f"{source:<16} {str(m.get('state', '-')):<9} "
            f"{_num((m.get('rates') or {}).get('events_per_s', 0)):>10} {drops:>7} "
            f"{lat.get('p50_us', 0):>8.0f} {lat.get('p99_us', 0):>8.0f} "
            f"{m.get('engine_ops_per_s', 0):>10.0f} {restarts.get(source, '-'):>8}"
        )
    shown = {s for s in state.status}
    for name, n in sorted(restarts.items()):
        if name not in shown:
            out.append(f"{name:<16} {'-':<9} {'':>10} {'':>7} {'':>8} {'':>8} {'':>10} {n:>8}")
    out += _launch_table(state)
    return "\n".join(out) + "\n"


def _launch_table(state: TopState) -> list[str]:
    """Every launcher's processes with the host each runs on (a multi-host launch lists
    the processes of every agent)."""
    rows = [
        (name, p)
        for m in state.status.values()
        for name, p in (m.get("processes") or {}).items()
        if isinstance(p, dict)
    ]
    if not rows:
        return []
    out = ["", f"{'process':<16} {'host':<12} {'kind':<9} {'state':<9} {'pid':>8} {'restarts':>8}"]
    for name, p in sorted(rows, key=lambda r: (str(r[1].get("host", "local")), r[0])):
        out.append(
            f"{name:<16} {str(p.get('host', 'local')):<12} {str(p.get('kind', '-')):<9} "
            f"{str(p.get('state', '-')):<9} {p.get('pid', 0):>8} {p.get('restarts', 0):>8}"
        )
    return out


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError
    from spikefuse.sdk.config import DEFAULT_RUN_DIR
    from spikefuse.sdk.timing import StopSignal
    from spikefuse.transport.subscriber import Subscriber

    endpoints = list(args.endpoint)
    if not endpoints:
        run_dir = args.run_dir or DEFAULT_RUN_DIR
        from spikefuse.transport.unix import endpoint_of_socket_file

        endpoints = [endpoint_of_socket_file(p) for p in sorted(Path(run_dir).glob("*.sock"))]
        if not endpoints:
            raise ConfigError(f"no *.sock endpoints in {run_dir}; give --run-dir or --endpoint")
    if not args.period > 0:
        raise ConfigError(f"--period: expected > 0, found {args.period}")
    duration_s = args.duration if args.duration is not None else (2.0 if args.once else None)
    state = TopState()
    tty = sys.stdout.isatty() and not args.once
    with StopSignal() as stop, Subscriber(endpoints, [""], name="top") as sub:
        t0 = time.monotonic()
        next_s = t0 + args.period
        last_s = t0
        while not stop.requested:
            now = time.monotonic()
            end = duration_s is not None and now - t0 >= duration_s
            if now >= next_s or end:
                state.tick(max(now - last_s, 1e-9))
                last_s = now
                next_s = now + args.period
                if not args.once or end:
                    text = render(state, sub.stats.seq_gaps)
                    sys.stdout.write(
                        ("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n")
                    )
                    sys.stdout.flush()
                if end:
                    break
            for msg in sub.recv_many(max(0.0, min(next_s - time.monotonic(), 0.25))):
                state.add(msg)
    return 0
