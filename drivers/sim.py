"""Simulator driver: a MuJoCo differential-drive robot on a track (``spikefuse.sim``),
published like a real robot's sensors: the forward camera as DVS events (the camera
driver's encoder), the gyro, accelerometer and wheel encoders as sigma-delta counts, all
on ``sensor/<name>``; the core cannot tell it from a robot. The world lives in this
process; its wheels follow the set-points that the ``sim`` actuator republishes
(``motor/<setpoints>_setpoints`` on ``<run_dir>/<setpoints>_setpoints.sock``) after its
deadman. Ground truth goes out as a ``Status`` on ``status/sim`` (``SIM_METRICS`` keys, plus
``track_xy`` in the first one and every ``track_every_s``); the loop's own figures (latency
from each sensor's sample to the wheels, sample and event counts) as ``status/loop.<name>``.

Clocks (``clock``):

* ``realtime``: the world steps on monotonic deadlines (1 ms); set-points apply when they
  arrive. If the process falls behind by more than ``max_lag_ms``, the schedule moves
  forward by whole steps (counted in ``n_slips``).
* ``lockstep``: samples are stamped on the world's own clock; every ``sync_ms`` of sim time
  the driver sends a heartbeat at that time and waits until a set-point stamped at or after
  it comes back (the core runs with ``clock: data`` and answers every heartbeat), then applies
  the set-points at that step. Same seed -> the same run, bit for bit, as fast as the
  processes go.

``controller: teacher`` drives from ground truth instead (pure pursuit on the track's
centre line, ``teacher.*``) and publishes its wheel commands as ``MotorCommand`` on
``motor/teacher`` so a recording holds them next to the sensor streams.

Each group's samples carry a fixed sub-microsecond phase within the 1 ms step (gyro +0 ns,
accel +100 ns, wheels +200 ns, camera +300 ns), so the cause time of a motor command names
the sensor whose sample caused it. Camera frames are DVS-encoded with the frame's own time
(a rendered frame is a snapshot: its events carry the time it was taken).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from spikefuse.config import StrictModel
from spikefuse.core.stats import LatencyHistogram
from spikefuse.errors import ConfigError
from spikefuse.protocol import MotorCommand, Status
from spikefuse.sdk import DriverConfig, DriverContext, DvsSettings, Events, Item, Sample, driver
from spikefuse.sim import model as M
from spikefuse.sim.config import WorldConfig
from spikefuse.sim.report import RunReport
from spikefuse.sim.world import STEP_NS, World
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.subscriber import Subscriber

SIM_SOURCE = "sim"
SIM_METRICS = (
    "x_m",
    "y_m",
    "yaw_rad",
    "v_mps",
    "w_radps",
    "progress_m",
    "lap",
    "cross_track_m",
    "collisions",
    "sim_t_s",
)
PHASE_NS = {"gyro": 0, "accel": 100, "wheels": 200, "camera": 300}
"""the sub-microsecond phase of each group's samples within a step (names the cause)"""
RATES = {"gyro": "gyro", "accel": "accel", "wheels": "encoders", "camera": "camera"}


class TeacherConfig(StrictModel):
    """Pure pursuit on the centre line: steer towards the point ``lookahead_m`` ahead."""

    speed_mps: float = Field(0.5, gt=0.0, le=2.0)
    lookahead_m: float = Field(0.3, gt=0.05, le=2.0)
    rate_hz: float = Field(100.0, gt=0.0, le=1000.0)


class ReportConfig(StrictModel):
    """The end-of-run report (``spikefuse.sim.report``): printed, and drawn to ``png``."""

    enabled: bool = True
    png: Path | None = None
    """the picture (relative paths: to the config file); null: none"""
    json_path: Path | None = None
    """the figures and the loop's final status as JSON (for ``spikefuse bench sim``)"""
    graph: Path | None = None
    """the core's graph, for the dense baselines (relative: to the config file)"""
    core: str = Field("core", min_length=1, max_length=128)
    core_endpoint: Endpoint | None = None
    """default <run_dir>/<core>.sock over ``local_transport`` (its status/<core> gives the
    engine figures)"""
    wait_core_s: float = Field(1.5, ge=0.0, le=60.0)
    """at the end: wait this long for one more status of the core"""


class SimDriverConfig(DriverConfig):
    # 1 count = 0.05 rad/s (gyro), 0.5 m/s² (accel), 0.01 rad of wheel (628 ticks/turn);
    # the rates are the world's (world.gyro.rate_hz, ...): every sample it gives is encoded
    default_groups = {
        "gyro": {"scale": 20.0},
        "accel": {"scale": 2.0},
        "wheels": {"scale": 100.0},
        "camera": {"scale": 5.0},
    }
    name: str = "robot"
    max_batch_latency_ms: float = Field(0.0, ge=0.0, le=60_000.0)
    world: WorldConfig = Field(default_factory=WorldConfig)
    dvs: DvsSettings = Field(default_factory=DvsSettings)
    clock: Literal["realtime", "lockstep"] = "realtime"
    controller: Literal["core", "teacher"] = "core"
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    setpoints: str = Field("wheels", min_length=1, max_length=100)
    """name of the ``sim`` actuator whose set-points drive the wheels"""
    setpoint_endpoint: Endpoint | None = None
    """default <run_dir>/<setpoints>_setpoints.sock over ``local_transport``"""
    setpoint_timeout_s: float = Field(0.5, gt=0.0, le=60.0)
    """realtime: no set-point message for this long stops the wheels"""
    sync_ms: float = Field(10.0, ge=1.0, le=1000.0)
    """lock-step: the world waits for the core's answer every this much sim time (the
    set-points it brings apply then: a control period of 10 ms)"""
    lockstep_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    max_lag_ms: float = Field(50.0, gt=0.0, le=10_000.0)
    status_hz: float = Field(25.0, gt=0.0, le=1000.0)
    track_every_s: float = Field(5.0, gt=0.0, le=3600.0)
    report: ReportConfig = Field(default_factory=ReportConfig)
    laps: int | None = Field(1, ge=1)
    """stop after this many laps (null: run until duration_s or a signal)"""

    @model_validator(mode="before")
    @classmethod
    def _camera_settings(cls, data: Any) -> Any:
        """The DVS array is the camera's resolution; the camera group's scale is
        1/dvs.threshold (as in the camera driver)."""
        if not isinstance(data, dict):
            return data
        world = data.get("world") or {}
        cam = world.get("camera") if isinstance(world, dict) else None
        cam = cam if isinstance(cam, dict) else {}
        dvs = data.get("dvs") or {}
        if not isinstance(dvs, dict):
            return data
        dvs = dict(dvs)
        for key, default in (("width", 64), ("height", 48)):
            want = cam.get(key, default)
            if key in dvs and dvs[key] != want:
                raise ValueError(
                    f"dvs.{key} is the camera's ({want}, world.camera.{key}); found {dvs[key]}"
                )
            dvs[key] = want
        thr = dvs.get("threshold", 0.2)
        groups = data.get("groups") or {}
        if isinstance(thr, int | float) and thr > 0 and isinstance(groups, dict):
            cam_group = groups.get("camera") or {}
            if isinstance(cam_group, dict):
                if "scale" in cam_group and abs(float(cam_group["scale"]) * thr - 1) > 1e-9:
                    raise ValueError(
                        f"groups.camera.scale is 1/dvs.threshold ({1 / thr:g}); found "
                        f"{cam_group['scale']} (set dvs.threshold instead)"
                    )
                groups = {**groups, "camera": {**cam_group, "scale": 1.0 / thr}}
        return {**data, "dvs": dvs, "groups": groups}

    def resolved_core_endpoint(self) -> str:
        if self.report.core_endpoint is not None:
            return self.report.core_endpoint
        return self.local_endpoint(self.report.core)

    def resolved_setpoint_endpoint(self) -> str:
        if self.setpoint_endpoint is not None:
            return self.setpoint_endpoint
        return self.local_endpoint(f"{self.setpoints}_setpoints")


# ------------------------------------------------------------------------------ helpers


def pure_pursuit(world: World, cfg: TeacherConfig) -> tuple[float, float]:
    """Wheel speeds (rad/s) that steer towards the centre-line point ``lookahead_m``
    ahead of the robot's projection on it (ground truth)."""
    t = world.truth
    s, _ = world.track.project(t.x_m, t.y_m)
    gx, gy, _ = world.track.pose_at(s + cfg.lookahead_m)
    dx, dy = gx - t.x_m, gy - t.y_m
    c, sn = math.cos(t.yaw_rad), math.sin(t.yaw_rad)
    ly = -sn * dx + c * dy  # lateral offset of the goal in the robot frame
    curvature = 2.0 * ly / max(dx * dx + dy * dy, 1e-6)
    w = cfg.speed_mps * curvature
    v = cfg.speed_mps
    return (v - w * M.HALF_TRACK_M) / M.WHEEL_RADIUS_M, (v + w * M.HALF_TRACK_M) / M.WHEEL_RADIUS_M


class Loop:
    """The driver's state besides the world: set-points, clocks, counters, latency."""

    def __init__(self, cfg: SimDriverConfig, ctx: DriverContext, world: World, sub: Subscriber):
        self.cfg = cfg
        self.ctx = ctx
        self.world = world
        self.sub = sub
        self.anchor_ns = ctx.start_ns - ctx.start_ns % STEP_NS
        self.latency = {g: LatencyHistogram() for g in PHASE_NS}
        self.n_samples = dict.fromkeys(PHASE_NS, 0)
        self.n_setpoints = 0
        self.n_safe = 0
        self.n_slips = 0
        self.n_watchdog = 0
        self.last_setpoint_ns = time.monotonic_ns()
        self.watchdog_tripped = False
        self.pending: list[MotorCommand] = []
        self.acked_ns = -1
        self.synced_ns = self.anchor_ns
        """lock-step: the data time of the last sync, up to which every sample went to the
        SDK (what the periodic heartbeats vouch for)"""
        self.last_cause_ns = -1
        self.sent_at: dict[int, int] = {}
        self.status_seq = 0
        self.loop_seq = 0
        self.teacher_seq = 0
        self.status_period_ns = round(1e9 / cfg.status_hz)
        self.next_status_ns = 0
        self.track_period_ns = round(cfg.track_every_s * 1e9)
        self.next_track_ns = 0
        self.teacher_period_ns = round(1e9 / cfg.teacher.rate_hz)
        self.next_teacher_ns = 0
        self.cross_sq = 0.0
        self.n_cross = 0
        self.lap_time_s: float | None = None
        self.wall_start_ns = time.monotonic_ns()
        rep = cfg.report
        self.report = RunReport(
            cfg.resolve_path(rep.graph) if rep.graph is not None else None,
            {g: getattr(world.cfg, RATES[g]).rate_hz for g in PHASE_NS},
            track_xy=world.track.sample(0.05),
            camera_pixels=world.cfg.camera.width * world.cfg.camera.height,
        )
        self.core_topic = f"status/{rep.core}"

    def t_of(self, group: str) -> int:
        return self.anchor_ns + self.world.t_ns + PHASE_NS[group]

    # ---------------------------------------------------------------- set-points
    def receive(self, timeout_s: float) -> None:
        for msg in self.sub.recv_many(timeout_s):
            if isinstance(msg, Status):
                if msg.source == self.cfg.report.core:
                    self.report.add_core_status(msg.metrics)
                continue
            if not isinstance(msg, MotorCommand):
                continue
            now = time.monotonic_ns()
            self.last_setpoint_ns = now
            if msg.cause_t_ns < 0:  # the actuator's safe values (start, deadman, stop)
                self.n_safe += 1
                if self.cfg.clock == "realtime":  # lock-step: no answer = a frozen world
                    self._apply(msg.values)
                continue
            self.n_setpoints += 1
            if self.cfg.clock == "realtime":  # lock-step: data time is not wall time
                self._attribute(msg.cause_t_ns, now)
            if self.cfg.clock == "lockstep":
                self.pending.append(msg)
                self.acked_ns = max(self.acked_ns, msg.t_ns)
            else:
                self._apply(msg.values)

    def _attribute(self, cause_ns: int, now_ns: int) -> None:
        """Latency of the stack: from the sample leaving the driver to the set-point it
        caused arriving back (the world's own lateness, counted in slips, is not in it)."""
        if cause_ns <= self.last_cause_ns:  # refreshes and repeats: not a new latency
            return
        self.last_cause_ns = cause_ns
        sent_ns = self.sent_at.get(cause_ns)
        if sent_ns is None:
            return
        phase = (cause_ns - self.anchor_ns) % STEP_NS
        for g, p in PHASE_NS.items():
            if phase == p:
                self.latency[g].add(now_ns - sent_ns)
                return

    def mark_sent(self, t_ns: int) -> None:
        """Remember when the sample stamped ``t_ns`` left (the last 2 s are kept)."""
        self.sent_at[t_ns] = time.monotonic_ns()
        if len(self.sent_at) > 4000:
            horizon = t_ns - 2_000_000_000
            self.sent_at = {k: v for k, v in self.sent_at.items() if k >= horizon}

    def _apply(self, values: np.ndarray) -> None:
        if self.cfg.controller == "teacher":
            return  # the teacher drives; the core's commands are only listened to
        if values.size < 2:
            return
        self.world.set_wheels(float(values[0]), float(values[1]))
        self.watchdog_tripped = False

    def watchdog(self) -> None:
        now = time.monotonic_ns()
        if self.watchdog_tripped or self.cfg.controller == "teacher":
            return
        if now - self.last_setpoint_ns > self.cfg.setpoint_timeout_s * 1e9:
            self.watchdog_tripped = True
            self.n_watchdog += 1
            self.world.set_wheels(0.0, 0.0)

    # ---------------------------------------------------------------- clocks
    def wait_step(self) -> bool:
        """Real time: wait for the next step's deadline while taking set-points in."""
        deadline = self.anchor_ns + self.world.t_ns + STEP_NS
        while True:
            now = time.monotonic_ns()
            if now >= deadline:
                lag = now - deadline
                if lag > self.cfg.max_lag_ms * 1e6:
                    steps = -(-lag // STEP_NS)
                    self.anchor_ns += steps * STEP_NS
                    self.n_slips += 1
                self.receive(0)
                self.watchdog()
                return True
            self.ctx.service()
            if self.ctx.stopping:
                return False
            self.receive(min(deadline - now, 2_000_000) / 1e9)

    def sync_time(self) -> int:
        """The time a sync at this step vouches for: after every phase of the step."""
        return self.anchor_ns + self.world.t_ns + 999

    def sync(self) -> bool:
        """Lock-step: mark everything up to now as sent, wait for the answer, apply."""
        t_ns = self.synced_ns = self.sync_time()
        self.ctx.heartbeat(t_ns)
        now = time.monotonic_ns()
        give_up = now + round(self.cfg.lockstep_timeout_s * 1e9)
        resend = now + 500_000_000
        while self.acked_ns < t_ns:
            if self.ctx.stopping:
                return False
            if time.monotonic_ns() > resend:  # a core that joined late missed it
                resend += 500_000_000
                self.ctx.heartbeat(t_ns)
            if time.monotonic_ns() > give_up:
                raise ConfigError(
                    f"lock-step: no answer from the core for {self.cfg.lockstep_timeout_s} s "
                    f"(waiting for a set-point stamped >= {t_ns} on "
                    f"{self.cfg.resolved_setpoint_endpoint()}); is the core running with "
                    "clock: data and the sim actuator forwarding to it?",
                    "clock",
                )
            self.receive(0.05)
        for msg in self.pending:
            if msg.t_ns <= t_ns:
                self._apply(msg.values)
        self.pending = [m for m in self.pending if m.t_ns > t_ns]
        return True

    # ---------------------------------------------------------------- outputs
    def teacher(self) -> None:
        if self.cfg.controller != "teacher" or self.world.t_ns < self.next_teacher_ns:
            return
        self.next_teacher_ns += self.teacher_period_ns
        left, right = pure_pursuit(self.world, self.cfg.teacher)
        self.world.set_wheels(left, right)
        t = self.anchor_ns + self.world.t_ns
        self.ctx.publish(
            MotorCommand("teacher", self.teacher_seq, t, t, self.world.wheels_radps.copy())
        )
        self.teacher_seq += 1

    def status(self, force: bool = False) -> None:
        w = self.world
        if not force and w.t_ns < self.next_status_ns:
            return
        self.next_status_ns = w.t_ns + self.status_period_ns
        truth = w.truth
        self.cross_sq += truth.cross_track_m**2
        self.n_cross += 1
        self.report.add_truth(truth.sim_t_s, truth.x_m, truth.y_m, truth.cross_track_m)
        metrics: dict[str, object] = truth.metrics()
        if w.t_ns >= self.next_track_ns or self.status_seq == 0:
            self.next_track_ns = w.t_ns + self.track_period_ns
            metrics["track_xy"] = w.track.sample()
        t = self.anchor_ns + w.t_ns
        self.ctx.publish(Status(SIM_SOURCE, self.status_seq, t, metrics))
        self.status_seq += 1

    def finish_report(self, loop_metrics: dict) -> None:
        """Wait (briefly) for one more core status, then print and draw the report."""
        rep = self.cfg.report
        if not rep.enabled:
            return
        n0 = len(self.report.core)
        give_up = time.monotonic_ns() + round(rep.wait_core_s * 1e9)
        while len(self.report.core) == n0 and time.monotonic_ns() < give_up:
            if self.ctx.stopping:
                break
            self.ctx.service()
            self.receive(0.05)
        print(self.report.summary_text(loop_metrics), flush=True)
        if rep.png is not None:
            path = self.report.write_png(self.cfg.resolve_path(rep.png), loop_metrics)
            print(f"  picture: {path}", flush=True)
        if rep.json_path is not None:
            path = self.cfg.resolve_path(rep.json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            figures = self.report.figures(loop_metrics)
            path.write_text(json.dumps({"figures": figures, "loop": loop_metrics}, indent=1))

    def loop_status(self, done: bool) -> dict:
        w = self.world
        wall_s = (time.monotonic_ns() - self.wall_start_ns) / 1e9
        sim_s = w.t_ns / 1e9
        rates = {RATES[g]: getattr(w.cfg, RATES[g]).rate_hz for g in PHASE_NS}
        metrics = {
            "done": done,
            "clock": self.cfg.clock,
            "controller": self.cfg.controller,
            "renderer": w.renderer,
            "track": w.track.name,
            "track_length_m": round(w.track.length_m, 4),
            "seed": w.cfg.seed,
            "sim_t_s": round(sim_s, 6),
            "wall_s": round(wall_s, 6),
            "realtime_factor": round(sim_s / wall_s, 4) if wall_s > 0 else 0.0,
            "lap_time_s": self.lap_time_s,
            "laps": w.truth.lap,
            "collisions": w.truth.collisions,
            "cross_track_rms_m": round(math.sqrt(self.cross_sq / max(self.n_cross, 1)), 6),
            "n_setpoints": self.n_setpoints,
            "n_safe": self.n_safe,
            "n_watchdog": self.n_watchdog,
            "n_slips": self.n_slips,
            "sample_rate_hz": {g: rates[RATES[g]] for g in PHASE_NS},
            "n_samples": dict(self.n_samples),
            "latency_us": {g: h.summary() for g, h in self.latency.items()},
            "latency_hist": {g: list(h.counts) for g, h in self.latency.items()},
        }
        t = self.anchor_ns + w.t_ns
        # loop.<name>: a topic no subscriber of status/<name> or status/sim also matches
        self.ctx.publish(Status(f"loop.{self.cfg.name}", self.loop_seq, t, metrics))
        self.loop_seq += 1
        return metrics

    def finished(self) -> bool:
        t = self.world.truth
        if self.lap_time_s is None and t.lap >= 1:
            self.lap_time_s = round(self.world.t_ns / 1e9, 4)
        return self.cfg.laps is not None and t.lap >= self.cfg.laps


class SyncBatch:
    """Lock-step with batching (``max_batch_latency_ms`` > 0): a sync period's samples of
    each sigma-delta group, encoded here with the runner's own encoders
    (``ctx.sample_encoder``: the same counts, totals and counters) and handed over as one
    :class:`Events` item per group before the sync's heartbeat, so the SDK sends the very
    batch it would have made from the samples one by one, for a fraction of the per-sample
    cost."""

    def __init__(self, ctx: DriverContext):
        self.ctx = ctx
        self.encoders: dict[str, Any] = {}
        self.parts: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}

    def add(self, group: str, t_ns: int, values: np.ndarray) -> None:
        enc = self.encoders.get(group)
        if enc is None:
            enc = self.encoders[group] = self.ctx.sample_encoder(group, values.size)
        ch, co = enc.encode(values)
        if ch.size:
            self.parts.setdefault(group, []).append((t_ns, ch, co))

    def items(self) -> Iterator[Item]:
        """One Events item per group with counts since the last call (the events of each
        sample at its own time: ``t_ns`` of the first, ``dt_ns`` the offsets)."""
        parts, self.parts = self.parts, {}
        for g, got in parts.items():
            t0 = got[0][0]
            ch = np.concatenate([c for _, c, _ in got])
            co = np.concatenate([n for _, _, n in got])
            dt = np.concatenate([np.full(c.size, t - t0, np.int64) for t, c, _ in got])
            n_values = self.encoders[g].n_channels
            yield Events(g, t0, ch, co, dt if dt.any() else None, n_values=n_values)


def _items(loop: Loop, readings, dvs, batch: SyncBatch | None) -> Iterator[Item]:
    timed = loop.cfg.clock == "realtime"  # lock-step measures no latency (data time)
    for r in readings:
        g = r.group
        t = loop.t_of(g)
        loop.n_samples[g] += 1
        if batch is not None and g != "camera":
            batch.add(g, t, r.values)
        elif g == "camera":
            ch, co, _ = dvs.encode(t, r.values, STEP_NS)
            if ch.size:
                if timed:
                    loop.mark_sent(t)
                yield Events(g, t, ch, co, n_values=r.values.size)
        else:
            if timed:
                loop.mark_sent(t)
            yield Sample(g, t, r.values)


@driver("sim", SimDriverConfig)
def SIM(cfg: SimDriverConfig, ctx: DriverContext) -> Iterator[Item]:
    """Simulated differential-drive robot (MuJoCo): camera, gyro, accel, wheel encoders."""
    world = World(cfg.world, "world")
    try:
        with Subscriber(
            [cfg.resolved_setpoint_endpoint(), cfg.resolved_core_endpoint()],
            [f"motor/{cfg.setpoints}_setpoints", f"status/{cfg.report.core}"],
            max_queue=100_000,
            name=cfg.name,
            security=cfg.resolved_security(),
        ) as sub:
            loop = Loop(cfg, ctx, world, sub)
            yield from _run(cfg, ctx, world, loop)
    finally:
        world.close()


def _run(cfg: SimDriverConfig, ctx: DriverContext, world: World, loop: Loop) -> Iterator[Item]:
    dvs = cfg.dvs.encoder()
    if cfg.clock == "lockstep":
        # the periodic heartbeats (liveness, the driver's status) come on wall-clock time, at
        # any step: they vouch for the last sync only (the samples since then may still be
        # in a SyncBatch), so the core's answer to one repeats that sync's answer and what
        # the core sends depends on the data alone
        ctx.stamp_heartbeats(lambda: loop.synced_ns)
    dvs.encode(loop.t_of("camera"), world.flat_frame(), STEP_NS)  # the reference frame
    sync_steps = max(1, round(cfg.sync_ms * 1e6 / STEP_NS))
    batch = None
    if cfg.clock == "lockstep" and cfg.max_batch_latency_ms > 0:
        batch = SyncBatch(ctx)
    loop.status(force=True)
    loop.loop_status(done=False)
    loop.report.mark_start()
    next_loop_status = 1_000_000_000
    while True:
        if cfg.clock == "lockstep":
            at_sync = world.step_index % sync_steps == 0
            if at_sync and batch is not None:
                yield from batch.items()
            if cfg.controller == "teacher":  # nothing to wait for: as fast as it goes
                if at_sync:
                    loop.synced_ns = loop.sync_time()
                ctx.service()
                if ctx.stopping:
                    break
            elif at_sync and not loop.sync():
                break
        elif not loop.wait_step():
            break
        if ctx.past_duration(loop.anchor_ns + world.t_ns + STEP_NS + PHASE_NS["camera"]):
            break
        loop.teacher()
        readings = world.step()
        yield from _items(loop, readings, dvs, batch)
        loop.status()
        if world.t_ns >= next_loop_status:
            next_loop_status += 1_000_000_000
            loop.loop_status(done=False)
        if loop.finished() or ctx.past_duration(loop.anchor_ns + world.t_ns) or ctx.stopping:
            break
    if batch is not None:
        yield from batch.items()  # the last period's samples (before the end heartbeat)
    ctx.end_stream("the run is over")  # at once: the report below takes a while
    world.set_wheels(0.0, 0.0)
    loop.status(force=True)
    metrics = loop.loop_status(done=True)
    print(_summary_line(loop), flush=True)
    loop.finish_report(metrics)


def _summary_line(loop: Loop) -> str:
    t = loop.world.truth
    lap = f"lap in {loop.lap_time_s:.2f} s" if loop.lap_time_s is not None else "no lap"
    wall_s = (time.monotonic_ns() - loop.wall_start_ns) / 1e9
    return (
        f"sim: {loop.world.t_ns / 1e9 / wall_s:.2f}x real time; "
        f"{loop.cfg.clock} {loop.world.t_ns / 1e9:.2f} s simulated, {lap}, "
        f"progress {t.progress_m:.2f} m, collisions {t.collisions}, renderer "
        f"{loop.world.renderer}, {loop.n_setpoints} set-points, {loop.n_slips} slips"
    )
