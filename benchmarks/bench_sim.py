"""The closed loop on the simulated robot (issues 11, 12): four real launches, one lap each
on the same seeded course.

* real time (``launch/sim.yaml`` with the hand-built graph set): task figures of the
  hand-built sigma-delta line follower
  (lap, lap time, cross-track RMS, collisions), sensor -> wheel latency (every sensor's
  samples pooled: p50/p99 of the time from a sample to the wheel set-point it caused, at
  the world), engine ops against the same graph run densely at the gyro rate (1 kHz) and at
  the camera rate (60 Hz) over the same span of core time;
* real time with the learned controller (``configs/graphs/sim_learned.npz``, the launch
  file's default, set explicitly): the ``learned_*`` fields;
* the teacher (``launch/sim_teacher.yaml`` without randomisation): pure pursuit from ground
  truth on the same course, the baseline of the cross-track RMS;
* lock-step (``launch/sim_lockstep.yaml``): sim time / wall time of the whole lap through
  driver, core and actuator processes.

Every figure comes from the sim driver's report (``report.json_path``), which takes the
engine counts from the core's own ``status/core``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from spikefuse.benchmarks._common import BenchResult
from spikefuse.core.stats import EDGES_US

DESCRIPTION = "closed loop on the simulated robot: task, latency, ops vs dense, lock-step speed"
REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default="oval", help="track name (oval, rounded_rect)")
    p.add_argument("--seed", type=int, default=0, help="world seed (robot.world.seed)")
    p.add_argument("--renderer", default="numpy", help="auto | mujoco | numpy")
    p.add_argument("--timeout", type=float, default=600.0, help="per launch, seconds")


def _run(launch: str, tmp: Path, tag: str, sets: list[str], timeout: float) -> dict:
    out = tmp / f"{tag}.json"
    env = {**os.environ, "SPIKEFUSE_RUN_DIR": str(tmp / f"run-{tag}"), "PWD": str(tmp)}
    env["SIM_TEACHER_OUT"] = env["SIM_LOCKSTEP_OUT"] = f"{tag}.mcap"
    argv = [sys.executable, "-m", "spikefuse", "launch", str(LAUNCH / launch)]
    for s in [*sets, f"robot.report.json_path={out}", "robot.report.enabled=true"]:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
    if proc.returncode != 0 or not out.exists():
        tail = proc.stdout[-3000:] + proc.stderr[-2000:]
        raise RuntimeError(f"{launch} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())


def _pooled_percentiles(hists: dict) -> tuple[float, float]:
    counts = None
    for h in hists.values():
        a = np.asarray(h, float)
        counts = a if counts is None else counts + a
    if counts is None or counts.sum() == 0:
        return math.nan, math.nan
    cum = np.cumsum(counts) / counts.sum()
    upper = np.concatenate([EDGES_US, [math.inf]])
    return (float(upper[np.searchsorted(cum, 0.5)]), float(upper[np.searchsorted(cum, 0.99)]))


HAND_BUILT = ["core.graph=../graphs/sim_line.yaml", "robot.report.graph=../graphs/sim_line.yaml"]
LEARNED = [
    "core.graph=../graphs/sim_learned.npz",
    "robot.report.graph=../graphs/sim_learned.npz",
]
LEARNED_REPORT = REPO / "configs/graphs/sim_learned_report.json"


def run(args: argparse.Namespace) -> BenchResult:
    world = [
        f"robot.world.track={args.track}",
        f"robot.world.seed={args.seed}",
        f"robot.world.renderer={args.renderer}",
        "robot.laps=1",
    ]
    with tempfile.TemporaryDirectory(prefix="spikefuse-bench-sim-") as d:
        tmp = Path(d)
        rt = _run("sim.yaml", tmp, "realtime", [*world, *HAND_BUILT], args.timeout)
        learned = _run("sim.yaml", tmp, "learned", [*world, *LEARNED], args.timeout)
        teacher_sets = [
            *world,
            f"robot.world.renderer={args.renderer}",
            "robot.world.randomize.start_pose=false",
            "robot.world.randomize.lighting=false",
            "robot.world.randomize.sensor_noise=false",
        ]
        teacher = _run("sim_teacher.yaml", tmp, "teacher", teacher_sets, args.timeout)
        ls = _run("sim_lockstep.yaml", tmp, "lockstep", world, args.timeout)
    f, loop = rt["figures"], rt["loop"]
    p50, p99 = _pooled_percentiles(loop["latency_hist"])
    fields = {
        "lap_completed": bool(f["lap_completed"]),
        "lap_time_s": f["lap_time_s"],
        "cross_track_rms_m": f["cross_track_rms_m"],
        "teacher_cross_track_rms_m": teacher["figures"]["cross_track_rms_m"],
        "collisions": f["collisions"],
        "ops_ratio_vs_dense_at_gyro_rate": f.get("ops_ratio_vs_dense_at_gyro_rate"),
        "ops_ratio_vs_dense_at_camera_rate": f.get("ops_ratio_vs_dense_at_camera_rate"),
        "sensor_to_motor_p50_us": p50,
        "sensor_to_motor_p99_us": p99,
        "realtime_factor_lockstep": ls["loop"]["realtime_factor"],
        "lockstep_lap_completed": bool(ls["figures"]["lap_completed"]),
        "lockstep_cross_track_rms_m": ls["figures"]["cross_track_rms_m"],
        "renderer": loop["renderer"],
        "track": loop["track"],
        "seed": args.seed,
        "realtime_slips": loop["n_slips"],
        "latency_us_by_sensor": {g: v for g, v in f["latency_us"].items() if v.get("n")},
        "events_per_s": f["events_per_s"],
        **_learned_fields(learned["figures"], teacher["figures"]["cross_track_rms_m"]),
    }
    res = BenchResult("sim: closed loop on the simulated robot (one lap, real processes)")
    res.fields = fields
    tr = fields["teacher_cross_track_rms_m"]
    res.add(
        "lap completed (collisions)", f"{fields['lap_completed']} ({f['collisions']})", "-", "-"
    )
    res.add("lap time (s)", f["lap_time_s"], teacher["figures"]["lap_time_s"], "-")
    res.add(
        "cross-track RMS (m) vs teacher", f["cross_track_rms_m"], tr,
        f["cross_track_rms_m"] / tr if tr else None,
    )  # fmt: skip
    res.add("engine ops vs dense at 1 kHz (gyro)", f.get("engine_ops"), "-",
            fields["ops_ratio_vs_dense_at_gyro_rate"])  # fmt: skip
    res.add("engine ops vs dense at 60 Hz (camera)", f.get("engine_ops"), "-",
            fields["ops_ratio_vs_dense_at_camera_rate"])  # fmt: skip
    lf = learned["figures"]
    res.add("learned: lap completed (collisions)",
            f"{fields['learned_lap_completed']} ({lf['collisions']})", "-", "-")  # fmt: skip
    res.add("learned: cross-track RMS (m) vs teacher", fields["learned_cross_track_rms_m"], tr,
            fields["learned_vs_teacher_cross_track_ratio"])  # fmt: skip
    res.add("learned: engine ops vs dense at 1 kHz (gyro)", lf.get("engine_ops"), "-",
            fields["learned_ops_ratio_vs_dense_at_gyro_rate"])  # fmt: skip
    res.add("learned: engine ops vs dense at 60 Hz (camera)", lf.get("engine_ops"), "-",
            fields["learned_ops_ratio_vs_dense_at_camera_rate"])  # fmt: skip
    res.add("sensor -> wheel latency p50 (us)", p50, "-", "-")
    res.add("sensor -> wheel latency p99 (us)", p99, "-", "-")
    res.add("lock-step sim time / wall time", ls["loop"]["sim_t_s"], ls["loop"]["wall_s"],
            fields["realtime_factor_lockstep"])  # fmt: skip
    res.notes.append(
        f"renderer {loop['renderer']}, track {loop['track']}, seed {args.seed}; real-time "
        f"slips (>50 ms behind): {loop['n_slips']}; targets: lap without collision, "
        "cross-track <= 1.5x teacher, ops vs dense at gyro rate <= 0.05, p50 <= 1000 us, "
        "lock-step >= 5x"
    )
    return res


def _learned_fields(lf: dict, teacher_rms: float) -> dict:
    """The learned controller (configs/graphs/sim_learned.npz, launch/sim.yaml's default,
    run with an explicit --set); ``train_seconds`` is the shipped graph's training time
    (load, fit, scale search, engine check) and ``collect_seconds`` the time its training
    runs took to record (``spikefuse train ... --collect``), both from its report."""
    rep = json.loads(LEARNED_REPORT.read_text())
    return {
        "learned_lap_completed": bool(lf["lap_completed"]),
        "learned_cross_track_rms_m": lf["cross_track_rms_m"],
        "learned_ops_ratio_vs_dense_at_camera_rate": lf.get("ops_ratio_vs_dense_at_camera_rate"),
        "learned_ops_ratio_vs_dense_at_gyro_rate": lf.get("ops_ratio_vs_dense_at_gyro_rate"),
        "learned_vs_teacher_cross_track_ratio": (
            lf["cross_track_rms_m"] / teacher_rms if teacher_rms else None
        ),
        "train_seconds": rep["train_seconds"],
        "collect_seconds": rep.get("collect_seconds"),
    }
