"""The daemon loop of ``spikefuse core``: sockets, waking, signals.

The loop sleeps in ``zmq poll`` until the next message or the core's next deadline
(integrator crossing, reorder release, staleness, motor refresh/slew/interval, status),
whichever comes first: no fixed tick. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import gc
import logging
import time

from spikefuse.backends import select_engine, session
from spikefuse.core.config import CoreConfig
from spikefuse.core.fusion import FusionCore, data_time_ns
from spikefuse.errors import ConfigError
from spikefuse.graph import Graph
from spikefuse.protocol import Heartbeat
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber

log = logging.getLogger(__name__)

MAX_SLEEP_S = 0.25
"""Longest single poll (a stop request is also seen through the wake-up fd)."""
MAX_DATA_TIME_NS = 2**62
"""Later than any data time: ``clock: data`` applies what it still holds at the end."""
MAX_PER_WAKE = 1024
"""Most messages one wake hands over (a flood still lets deadlines and stops be seen)."""


def load_graph(cfg: CoreConfig):
    path = cfg.graph_path()
    if not path.exists():
        raise ConfigError(f"graph file {path} not found", "graph")
    return Graph.load(path).resolve()


def _bus_stats(sub: Subscriber):
    def stats() -> dict[str, object]:
        s = sub.stats
        return {
            "rejected": s.rejected,
            "n_dropped": s.n_dropped,
            "n_coalesced": s.n_coalesced,
            "n_auth_denied": s.n_auth_denied,
        }

    return stats


def _listening(pub: Publisher):
    def listening(topic: bytes) -> bool:
        pub.poll_subscriptions()
        return pub.has_subscriber(topic)

    return listening


def run_core(cfg: CoreConfig, stop: StopSignal | None = None) -> int:
    """Run the daemon until SIGINT/SIGTERM (or ``duration_s``); returns 0."""
    graph = load_graph(cfg)
    engine = select_engine(cfg, graph)
    endpoints = sorted({cfg.sensor_endpoint(i) for i in cfg.inputs.values()})
    sensors = {i.sensor for i in cfg.inputs.values()}
    # the drivers' Status (sample counters) too, for the closing report
    topics = sorted({f"{kind}/{s}" for s in sensors for kind in ("sensor", "status")})
    own_stop = stop is None
    stop = stop or StopSignal()
    security = cfg.resolved_security()
    with (
        stop if own_stop else _nullctx(),
        session(engine),
        Publisher(cfg.resolved_endpoint(), hwm=cfg.hwm, security=security) as pub,
    ):
        _wait_for_listeners(cfg, pub, stop)
        with Subscriber(
            endpoints,
            topics,
            hwm=cfg.hwm,
            security=security,
            policy=cfg.queue_policy,
            max_queue=cfg.max_queue,
            name=cfg.name,
        ) as sub:
            _serve(cfg, graph, engine, pub, sub, stop)
    return 0


def _serve(cfg: CoreConfig, graph, engine, pub: Publisher, sub: Subscriber, stop: StopSignal):
    if cfg.clock == "data":
        core = _run_data_clock(cfg, graph, engine, sub, stop, pub)
        if core is not None:
            core.release_data(MAX_DATA_TIME_NS)  # what no last heartbeat vouched for
            core.publish_status(core.data_now_ns)
            print(core.summary(), flush=True)
        return
    core = FusionCore(cfg, graph, engine, time.monotonic_ns(), pub.send)
    core.send_payload = pub.send_payload
    core.bus_stats = _bus_stats(sub)
    core.listening = _listening(pub)
    gc.freeze()  # start-up objects leave the collector's view: shorter pauses later
    log.info(
        "core '%s': graph %s, inputs from %s, publishing on %s",
        cfg.name,
        cfg.graph_path(),
        ", ".join(sub.endpoints),
        pub.endpoint,
    )
    _loop(core, sub, stop, cfg)
    core.publish_status(time.monotonic_ns())
    print(core.summary(), flush=True)


def _wait_for_listeners(cfg: CoreConfig, pub: Publisher, stop: StopSignal):
    """``cfg.wait_for_subscribers``: called before the inputs are subscribed."""
    if cfg.wait_for_subscribers:
        # a subscriber counts once, whichever of the core's topics it holds
        topics = [f"motor/{a}".encode() for a in cfg.actuators] or [f"status/{cfg.name}".encode()]
        n, timeout_s = cfg.wait_for_subscribers, cfg.wait_for_subscribers_timeout_s
        log.info("core '%s': waiting for %d subscriber(s) before its inputs", cfg.name, n)
        if not pub.wait_for_subscribers(n, timeout_s, topics, lambda: stop.requested):
            log.warning(
                "core '%s': %d of %d subscribers after %.3g s; starting anyway",
                cfg.name,
                pub.n_waited_for(topics),
                n,
                timeout_s,
            )


def _loop(core: FusionCore, sub: Subscriber, stop: StopSignal, cfg: CoreConfig) -> None:
    end_ns = None
    if cfg.duration_s is not None:
        end_ns = time.monotonic_ns() + round(cfg.duration_s * 1e9)
    wake = _compiled_wake(core, sub) if core.hot is not None else _wake_python
    while not stop.requested:
        now_ns = time.monotonic_ns()
        if end_ns is not None and now_ns >= end_ns:
            break
        wait_ns = core.next_wake_ns() - now_ns
        # whole milliseconds, rounded up (the socket waits in ms: a wait cut to 0 ms would
        # spin until the deadline), +0.5 ms so that float rounding cannot cut one off
        wait_ms = min(-(-max(wait_ns, 0) // 1_000_000), round(MAX_SLEEP_S * 1000))
        wake(core, sub, (wait_ms + 0.5) / 1000 if wait_ms > 0 else 0.0)


def _compiled_wake(core: FusionCore, sub: Subscriber):
    """One wake of a core with the compiled path: every message is handled as it comes
    off the socket, in one compiled call where that applies (handled and serviced), else
    decoded (the subscriber's checks) and handled and serviced in Python; none waits, so
    the queue policy has nothing to merge. A wake with no message, or one whose deadline
    was already due, ends with ``service`` (status, staleness)."""

    def compiled(topic: bytes, payload: bytes) -> bool:
        return core.receive(topic, payload, time.monotonic_ns())

    def python(msg) -> None:
        core.handle(msg, time.monotonic_ns())
        core.service(time.monotonic_ns())

    def wake(core: FusionCore, sub: Subscriber, timeout_s: float) -> None:
        if not sub.dispatch(timeout_s, compiled, python, MAX_PER_WAKE) or timeout_s <= 0:
            core.service(time.monotonic_ns())

    return wake


def _wake_python(core: FusionCore, sub: Subscriber, timeout_s: float) -> None:
    """One wake on the Python path: the first message is handled and its command published
    before looking for more (lowest latency); a backlog is then drained under the queue
    policy (``coalesce`` merges the batches of a stream that waited) and serviced once. A
    wait that timed out skips the drain: nothing arrived, the deadline is due."""
    first = sub.recv(timeout_s) if timeout_s > 0 else None
    if first is not None:
        core.handle(first, time.monotonic_ns())
        core.service(time.monotonic_ns())
    backlog = sub.recv_many(0) if first is not None or timeout_s <= 0 else []
    for msg in backlog:
        core.handle(msg, time.monotonic_ns())
    if first is None or backlog:
        core.service(time.monotonic_ns())


def _run_data_clock(cfg: CoreConfig, graph, engine, sub: Subscriber, stop: StopSignal, pub):
    """``clock: data``: the core starts at the earliest time of what arrived up to the
    first heartbeat (nothing is applied before one: see :meth:`FusionCore.on_data`) and
    from then on runs on the data's time (see :attr:`CoreConfig.clock`)."""
    cores: list[FusionCore] = []  # the core, once started
    early: list = []

    def compiled(topic: bytes, payload: bytes) -> bool:
        return bool(cores) and cores[0].receive(topic, payload, 0)

    def python(msg) -> None:
        if cores:
            cores[0].on_data(msg, data_time_ns(msg))
            return
        early.append(msg)
        if not isinstance(msg, Heartbeat):
            return
        t0 = min(data_time_ns(m) for m in early)
        core = FusionCore(cfg, graph, engine, t0, pub.send, data_clock=True)
        core.send_payload = pub.send_payload
        core.bus_stats = _bus_stats(sub)
        log.info("core '%s': data clock, started at t=%d ns", cfg.name, t0)
        for m in early:
            core.on_data(m, data_time_ns(m))
        cores.append(core)

    # every message as it comes off the socket, batches compiled where that applies
    while not stop.requested:
        sub.dispatch(MAX_SLEEP_S, compiled, python, MAX_PER_WAKE)
    return cores[0] if cores else None


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None
