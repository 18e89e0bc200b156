"""The view process: subscribe, integrate, log to Rerun at bounded rates, serve the page.

It only listens: one SUB socket on every publisher of the launch (a large receive
high-water mark, drained every loop into a per-stream queue that drops the oldest beyond
``max_queue``), so a slow browser or a busy machine costs the view frames, never the
core's messages. Work per loop is bounded by the logging rates, not by the message rate.
Its own counters go out as Status on ``status/<name>`` every ``status_period_s``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import TextIO

from spikefuse.protocol import Status
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber
from spikefuse.view.config import ViewConfig
from spikefuse.view.server import RerunServer
from spikefuse.view.state import ViewState, world_bounds

log = logging.getLogger(__name__)

NS = 1_000_000_000
MAX_WAIT_S = 0.1


class Every:
    """A periodic task: :meth:`due` is True once per ``period_s``."""

    def __init__(self, period_s: float, now_ns: int):
        self.period_ns = max(1, round(period_s * NS))
        self.next_ns = now_ns

    def due(self, now_ns: int) -> bool:
        if now_ns < self.next_ns:
            return False
        self.next_ns = max(self.next_ns + self.period_ns, now_ns)
        return True


class Listeners:
    """The view's subscribers: ``endpoints`` at once; ``sensor_endpoints`` once every
    source in ``wait_for_status`` has sent a Status, or after the timeout (a driver that
    waits for its subscribers then counts the core, not the view)."""

    def __init__(self, cfg: ViewConfig, now_ns: int):
        self.cfg = cfg
        self.subs = [self._subscriber(cfg.endpoints)]
        self.pending = list(cfg.sensor_endpoints)
        self.waiting = set(cfg.wait_for_status)
        self.deadline_ns = now_ns + round(cfg.wait_for_status_timeout_s * NS)

    def _subscriber(self, endpoints: list[str]) -> Subscriber:
        cfg = self.cfg
        return Subscriber(
            endpoints,
            [""],
            hwm=cfg.hwm,
            max_queue=cfg.max_queue,
            security=cfg.security,
            name=cfg.name,
        )

    def recv(self, now_ns: int) -> list:
        """Everything received since the last call (never waits)."""
        msgs = [m for sub in self.subs for m in sub.recv_many(0)]
        if self.pending:
            self.waiting -= {m.source for m in msgs if isinstance(m, Status)}
            if not self.waiting or now_ns >= self.deadline_ns:
                if self.waiting:
                    log.warning("no status from %s yet: connecting anyway", sorted(self.waiting))
                self.subs.append(self._subscriber(self.pending))
                self.pending = []
        return msgs

    def counts(self) -> tuple[int, int]:
        """(dropped, rejected) messages over every subscriber."""
        stats = [sub.stats for sub in self.subs]
        return sum(s.n_dropped for s in stats), sum(s.n_rejected for s in stats)

    def close(self) -> None:
        for sub in self.subs:
            sub.close()

    def __enter__(self) -> Listeners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class View:
    """State + sink + schedules; :meth:`step` handles messages and logs what is due."""

    def __init__(self, cfg: ViewConfig, sink, now_ns: int, cpu0_s: float = 0.0):
        self.cfg = cfg
        self.cpu0_s = cpu0_s
        self.sink = sink
        layouts = {k: (c.width, c.height) for k, c in cfg.cameras.items()}
        self.state = ViewState(layouts, cfg.pose_source, cfg.max_trail)
        self.tasks: list[tuple[Every, Callable[[int], None]]] = [
            (Every(1 / cfg.image_rate_hz, now_ns), self._images),
            (Every(1 / cfg.scalar_rate_hz, now_ns), self._motors),
            (Every(1 / cfg.pose_rate_hz, now_ns), self._pose),
            (Every(cfg.rates_period_s, now_ns), self._rates),
        ]
        self.state.rates.take(now_ns)

    def next_due_ns(self) -> int:
        return min(e.next_ns for e, _ in self.tasks)

    def step(self, msgs: list, now_ns: int) -> None:
        for m in msgs:
            self.state.handle(m)
        for every, task in self.tasks:
            if every.due(now_ns):
                task(now_ns)

    def _images(self, now_ns: int) -> None:
        st = self.state
        self.sink.layout(
            sorted(st.cameras), st.pose.pose is not None, world_bounds(st.pose.track_xy)
        )
        for key, cam in st.cameras.items():
            if cam.changed:
                self.sink.camera(key, cam)

    def _motors(self, now_ns: int) -> None:
        for actuator, t_ns, values in self.state.motors.take():
            self.sink.motor(actuator, t_ns, values)

    def _pose(self, now_ns: int) -> None:
        if self.state.pose.fresh:
            self.sink.pose(self.state.pose)

    def _rates(self, now_ns: int) -> None:
        rates = self.state.rates.take(now_ns)
        if rates:
            self.sink.rates(now_ns, rates)

    def metrics(self, listeners: Listeners, wall_s: float) -> dict[str, object]:
        """Counters; ``cpu_s`` is this process's CPU time (all threads) since start-up."""
        cpu_s = time.process_time() - self.cpu0_s
        st, n = self.state, self.sink.n
        n_dropped, n_rejected = listeners.counts()
        return {
            "n_messages": st.n_messages,
            "n_dropped": n_dropped,
            "n_rejected": n_rejected,
            "images_logged": n.images,
            "event_images_logged": n.event_images,
            "frames_per_camera": dict(n.per_camera),
            "motor_logged": n.motor,
            "motor_dropped": st.motors.n_dropped,
            "rates_logged": n.rates,
            "pose_logged": n.pose,
            "cameras": {
                k: {"n_events": c.n_events, "n_resyncs": c.n_resyncs, "n_outside": c.n_outside}
                for k, c in st.cameras.items()
            },
            "sensors_ended": sorted(st.ended),
            "pose_updates": st.pose.n_updates,
            "pose_bad": st.pose.n_bad,
            "cpu_s": round(cpu_s, 3),
            "cpu_fraction": round(cpu_s / wall_s, 4) if wall_s > 0 else 0.0,
        }


def run_view(cfg: ViewConfig, duration_s: float | None = None, out: TextIO = sys.stdout) -> int:
    """Serve the view until SIGINT/SIGTERM or ``duration_s``."""
    import rerun as rr

    from spikefuse.view.sink import RerunSink

    state_dir = cfg.run_dir / f"{cfg.name}-rerun"
    server = RerunServer(cfg.bind, cfg.web_port, cfg.grpc_port, cfg.server_memory_limit, state_dir)
    if cfg.nice:
        os.nice(cfg.nice)  # the server child inherits it
    with (
        StopSignal() as stop,
        server,
        Listeners(cfg, time.monotonic_ns()) as sub,
        Publisher(cfg.status_endpoint(), security=cfg.security) as pub,
    ):
        t0_ns = time.monotonic_ns()
        rec = rr.RecordingStream("spikefuse", recording_id=str(uuid.uuid4()))
        rec.connect_grpc(server.grpc_url)
        view = View(cfg, RerunSink(rec, t0_ns), t0_ns, time.process_time())
        out.write(f"live view: {server.url}\n")
        n_endpoints = len(cfg.endpoints) + len(cfg.sensor_endpoints)
        out.write(f"  listening to {n_endpoints} endpoint(s); Ctrl-C stops\n")
        out.flush()
        try:
            _loop(cfg, view, sub, pub, stop, server, t0_ns, duration_s)
        finally:
            _close_recording(rec, server)
        _report(view, sub, out, t0_ns)
    return 0


def _loop(
    cfg, view: View, sub: Listeners, pub, stop: StopSignal, server, t0_ns: int, duration_s
) -> None:
    end_ns = None if duration_s is None else t0_ns + round(duration_s * NS)
    status = Every(cfg.status_period_s, t0_ns)
    seq = 0
    while not stop.requested:
        now_ns = time.monotonic_ns()
        if end_ns is not None and now_ns >= end_ns:
            break
        # sleep until something is due, then take everything that arrived: wake-ups follow
        # the logging rates, not the message rate (the socket buffers up to hwm meanwhile)
        if stop.wait(min(max(view.next_due_ns() - now_ns, 0) / NS, MAX_WAIT_S)):
            break
        now_ns = time.monotonic_ns()
        msgs = sub.recv(now_ns)
        view.step(msgs, now_ns)
        if status.due(now_ns):
            server.check()
            metrics = view.metrics(sub, (now_ns - t0_ns) / NS)
            pub.send(Status(cfg.name, seq, now_ns, metrics))
            seq += 1


def _close_recording(rec, server: RerunServer) -> None:
    """Send what is still batched (if the server still runs), then disconnect."""
    try:
        if server.proc is not None and server.proc.poll() is None:
            rec.flush(timeout_sec=1.0)
    except RuntimeError as exc:  # rerun_bindings: the gRPC connection is gone
        log.warning("the last data did not reach the rerun server: %s", exc)
    rec.disconnect()


def _report(view: View, sub: Listeners, out: TextIO, t0_ns: int) -> None:
    wall_s = (time.monotonic_ns() - t0_ns) / NS
    m = view.metrics(sub, wall_s)
    out.write(
        f"live view: {m['n_messages']} messages in {wall_s:.1f} s, {m['images_logged']} camera "
        f"frames, {m['motor_logged']} motor samples, {m['pose_logged']} poses logged; "
        f"{m['n_dropped']} dropped; CPU {100 * m['cpu_fraction']:.1f} %"
        + (f"; streams ended: {', '.join(m['sensors_ended'])}" if m["sensors_ended"] else "")
        + "\n"
    )
    out.flush()
