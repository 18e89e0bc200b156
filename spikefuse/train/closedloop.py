"""The simulated robot in-process (no sockets, no processes), for training and evaluation.

:class:`SimLoop` steps the seeded world of a ``sim`` driver config and encodes its sensors
exactly as the driver does (the same config: DVS settings, group scales, sample phases),
so what it writes or pushes is what a core would receive. Each 1 ms step it

* computes the teacher's command (pure pursuit from ground truth, at ``teacher.rate_hz``)
  and, when recording, writes it as the label (``motor/teacher``),
* executes either the teacher's command plus a seeded perturbation (DART: an
  Ornstein-Uhlenbeck yaw-rate disturbance, so the recording holds recoveries labelled by
  the teacher) or a graph's output (the engine in-process: the closed-loop evaluation),
  through an actuation delay (the real loop is not instantaneous),
* steps the world and encodes the readings (``sensor/<name>`` EventBatches).

:func:`drive_lap` is the seeded lock-step course of the learned-controller test and of the
evaluation; :func:`record_run` writes one training recording. Needs ``spikefuse[sim]``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.engine import Engine
from spikefuse.engine.dense import DenseExecutor
from spikefuse.errors import ConfigError
from spikefuse.graph import Graph
from spikefuse.protocol import EventBatch, MotorCommand, encode
from spikefuse.recording.mcapio import LogWriter
from spikefuse.sdk.streams import GroupStream

T0_NS = 1_000_000_000  # the recordings' time origin (a core's clock is never 0)


@dataclass(frozen=True)
class Perturbation:
    """What the executed command adds to the teacher's (the label stays the teacher's):
    an Ornstein-Uhlenbeck yaw-rate disturbance of stationary std ``yaw_rate_std_radps`` and
    correlation time ``tau_s``."""

    yaw_rate_std_radps: float = 0.0
    tau_s: float = 0.5


def sim_driver_config(path: str | Path | None = None, overrides: list[str] | None = None):
    """The ``sim`` driver's config (its world, encoders and teacher) from a YAML file."""
    from spikefuse.sdk.registry import load_driver_config, resolve_kind

    return load_driver_config(resolve_kind("sim"), path, overrides)


class SimLoop:
    """One seeded run of the world of ``cfg`` (a ``SimDriverConfig``)."""

    def __init__(
        self,
        cfg,
        graph: Graph | None = None,
        output: str = "wheels_out",
        writer: LogWriter | None = None,
        delay_ms: float = 0.0,
        perturbation: Perturbation | None = None,
    ):
        from spikefuse.drivers.sim import PHASE_NS, pure_pursuit
        from spikefuse.sim import model as M
        from spikefuse.sim.world import STEP_NS, World

        self.cfg = cfg
        self.world = World(cfg.world, "world")
        self._pure_pursuit = pure_pursuit
        self.phase_ns = PHASE_NS
        self.step_ns = STEP_NS
        self.writer = writer
        self.output = output
        self.graph = graph
        self.rng = np.random.default_rng([cfg.world.seed, 0x5F])  # not the world's stream
        self.perturb = perturbation or Perturbation()
        self.delay = deque([np.zeros(2)] * max(0, round(delay_ms * 1e6 / STEP_NS)))
        self.streams = {g: self._stream(g) for g in cfg.enabled_groups()}
        self.dvs = cfg.dvs.encoder()
        self.dvs.encode(self.t_of("camera"), self.world.flat_frame(), STEP_NS)  # reference
        self.engine = None
        if graph is not None:
            self.engine = Engine(graph)
            self.engine.start(self.t_of("gyro"))
            self._check_scales(graph)
        self.teacher_cmd = np.zeros(2)
        self.applied = np.zeros(2)
        self.label_seq = 0
        self.next_teacher_ns = 0
        self.teacher_period_ns = round(1e9 / cfg.teacher.rate_hz)
        self.dw = 0.0  # the OU yaw-rate disturbance
        self._wheel_per_yaw = M.HALF_TRACK_M / M.WHEEL_RADIUS_M

    def _stream(self, g: str) -> GroupStream:
        c = self.cfg
        return GroupStream(c.name, g, c.input_of(g), c.groups[g].scale, 0, c.max_batch_events, 0)

    def _check_scales(self, graph: Graph) -> None:
        for g, s in self.streams.items():
            node = graph.nodes.get(s.input)
            if node is not None and node.type == "input" and node.scale != s.scale:
                raise ConfigError(
                    f"graph input '{s.input}' has scale {node.scale}, the sim driver's "
                    f"group '{g}' sends {s.scale}",
                    f"groups.{g}.scale",
                )

    def t_of(self, group: str) -> int:
        return T0_NS + self.world.t_ns + self.phase_ns[group]

    # ------------------------------------------------------------------ one step
    def step(self) -> None:
        w = self.world
        if w.t_ns >= self.next_teacher_ns:
            self._teacher_tick()
        if self.engine is not None:
            cmd = np.asarray(self.engine.output_value(self.output), np.float64)
        else:
            cmd = self.teacher_cmd + self._disturbance()
        self.delay.append(cmd)
        applied = self.delay.popleft()
        if not np.array_equal(applied, self.applied):
            w.set_wheels(*applied)
            self.applied = applied
        for r in w.step():
            t = self.t_of(r.group)
            s = self.streams.get(r.group)
            if s is None:
                continue
            if r.group == "camera":
                ch, co, _ = self.dvs.encode(t, r.values, self.step_ns)
                s.add(t, ch.astype(np.int32), co.astype(np.int32), None, 0, self._send)
            else:
                if s.encoder is None:  # as the driver runner: sized by the first sample
                    s.encoder = SigmaDeltaEncoder(r.values.size, s.scale)
                ch, co = s.encoder.encode(r.values)
                s.add(t, ch, co, None, 0, self._send)

    def _teacher_tick(self) -> None:
        w = self.world
        self.next_teacher_ns += self.teacher_period_ns
        lim = w.cfg.max_wheel_speed_radps
        self.teacher_cmd = np.clip(self._pure_pursuit(w, self.cfg.teacher), -lim, lim)
        p = self.perturb
        dt = self.teacher_period_ns * 1e-9
        if p.yaw_rate_std_radps > 0:
            a = math.exp(-dt / p.tau_s)
            self.dw = a * self.dw + p.yaw_rate_std_radps * math.sqrt(1 - a * a) * float(
                self.rng.normal()
            )
        if self.writer is not None:
            t = T0_NS + w.t_ns
            m = MotorCommand("teacher", self.label_seq, t, t, self.teacher_cmd.copy())
            self.writer.write("motor/teacher", encode(m), t, t, self.label_seq)
            self.label_seq += 1

    def _disturbance(self) -> np.ndarray:
        """The yaw-rate disturbance as wheel speeds (rad/s): -/+ w*b/r."""
        if self.dw == 0.0:
            return np.zeros(2)
        d = self.dw * self._wheel_per_yaw
        return np.array([-d, d])

    def _send(self, batch: EventBatch) -> None:
        if self.writer is not None:
            topic = f"sensor/{self.cfg.name}"
            self.writer.write(topic, encode(batch), batch.t_ns, batch.t_ns, batch.seq)
        if self.engine is not None and batch.channels.size:
            self.engine.push(batch.t_ns, batch.input, batch.channels, batch.counts)

    def close(self) -> None:
        self.world.close()


def run_loop(loop: SimLoop, max_s: float, laps: int = 1) -> dict:
    """Step ``loop`` until ``laps`` laps or ``max_s`` of sim time: the task figures
    (cross-track RMS sampled at the encoder rate, as the driver's report does) and, with a
    graph, the engine's ops against the same graph run densely at the camera and the gyro
    rate over the same time."""
    w = loop.world
    sq, n, lap_t = 0.0, 0, math.nan
    enc_every = max(1, round(1e9 / w.cfg.encoders.rate_hz / loop.step_ns))
    while w.truth.lap < laps and w.t_ns < max_s * 1e9:
        loop.step()
        if w.step_index % enc_every == 0:
            sq += w.truth.cross_track_m**2
            n += 1
        if w.truth.lap >= 1 and math.isnan(lap_t):
            lap_t = w.t_ns * 1e-9
    t_s = w.t_ns * 1e-9
    out = {
        "lap_completed": bool(w.truth.lap >= 1 and w.truth.collisions == 0),
        "lap_time_s": lap_t,
        "cross_track_rms_m": math.sqrt(sq / max(n, 1)),
        "collisions": int(w.truth.collisions),
        "progress_m": float(w.truth.progress_m),
        "sim_s": t_s,
    }
    if loop.engine is not None:
        dense = DenseExecutor(loop.graph).ops_per_step
        ops = loop.engine.counters["syn_ops"]
        out["ops"] = int(ops)
        out["ops_ratio_vs_dense_at_camera_rate"] = ops / (dense * w.cfg.camera.rate_hz * t_s)
        out["ops_ratio_vs_dense_at_gyro_rate"] = ops / (dense * w.cfg.gyro.rate_hz * t_s)
    return out


def drive_lap(
    graph: Graph | None,
    seed: int = 0,
    track: str = "oval",
    max_s: float = 60.0,
    output: str = "wheels_out",
    delay_ms: float = 0.0,
    driver_config: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """One lap of the seeded world (NumPy renderer, no randomisation unless ``overrides``
    say so) driven by ``graph``, or by the teacher when ``graph`` is None."""
    sets = [f"world.seed={seed}", f"world.track={track}", "world.renderer=numpy"]
    cfg = sim_driver_config(driver_config, sets + list(overrides or []))
    loop = SimLoop(cfg, graph, output, delay_ms=delay_ms)
    try:
        return run_loop(loop, max_s)
    finally:
        loop.close()


def record_run(
    path: str | Path,
    cfg,
    graph: Graph | None = None,
    output: str = "wheels_out",
    delay_ms: float = 0.0,
    perturbation: Perturbation | None = None,
    max_s: float = 60.0,
) -> dict:
    """One lap of ``cfg``'s world recorded to ``path`` (MCAP: ``sensor/<name>`` as the
    driver publishes it, ``motor/teacher`` the teacher's clean command at every tick),
    executed by the perturbed teacher or by ``graph``. Returns the run's task figures."""
    with LogWriter(path, flush_interval_s=None, metadata={"source": "spikefuse.train"}) as wr:
        loop = SimLoop(cfg, graph, output, wr, delay_ms, perturbation)
        try:
            return run_loop(loop, max_s)
        finally:
            loop.close()
