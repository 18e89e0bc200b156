"""The simulated robot through real processes: lock-step runs (bit-identical, offline
replay gives the same motor commands), a real-time launch end to end, and the deadman when
the core dies."""

from __future__ import annotations

import bisect
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status, decode
from spikefuse.recording.mcapio import open_log
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]


def _launch(tmp: Path, launch: str, *sets: str, timeout: float = 400, **env: str):
    run_env = {**os.environ, "SPIKEFUSE_RUN_DIR": str(tmp / "run"), "PWD": str(tmp), **env}
    argv = [sys.executable, "-m", "spikefuse", "launch", str(REPO / "launch" / launch)]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=run_env
    )


def _messages(path: Path, topic: str) -> list:
    return [decode(m.payload) for m in open_log(path).select([topic])]


def _answers(path: Path) -> dict[int, tuple[int, tuple[float, ...]]]:
    """The core's commands of a lock-step recording: sync time -> (cause, values), both
    times from the run's start (the first status/sim, at sim time 0)."""
    start = _messages(path, "status/sim")[0].t_ns
    return {
        m.t_ns - start: (m.cause_t_ns - start, tuple(m.values.tolist()))
        for m in _messages(path, "motor/wheels")
    }


def test_lockstep_runs_are_identical_and_replay_offline_to_the_same_commands(tmp_path):
    """Run 0 batches each stream per 10 ms sync (the launch file's default), run 1 sends
    every sample alone: the core pushes every sample at its own time either way, so both
    runs are the same bit for bit (a batch pushed at its last sample's time would move the
    causes and, through the wheels, the world); the batched recording replays offline to
    the same commands and causes (sampled at the syncs: the live core sends one a sync)."""
    runs = []
    for i, latency_ms in enumerate((10, 0)):
        r = _launch(
            tmp_path,
            "sim_lockstep.yaml",
            "robot.laps=null",
            "robot.duration_s=2.5",
            f"robot.max_batch_latency_ms={latency_ms}",
            f"robot.report.png={tmp_path}/ls{i}.png",
            SIM_LOCKSTEP_OUT=f"ls{i}.mcap",
        )
        assert r.returncode == 0, r.stdout[-4000:]
        assert "robot finished: stopping the launch" in r.stdout
        runs.append(tmp_path / f"ls{i}.mcap")
    batches = [_messages(p, "sensor/robot") for p in runs]
    gyro = [[b for b in bs if isinstance(b, EventBatch) and b.input == "gyro"] for bs in batches]
    assert sum(b.n_events for b in gyro[0]) == sum(b.n_events for b in gyro[1]) > 100
    assert len(gyro[0]) * 4 < len(gyro[1])  # run 0 batched: several samples a batch
    assert sum(b.dt_ns is not None for b in gyro[0]) > len(gyro[0]) // 2
    truths = [
        [
            {k: v for k, v in s.metrics.items() if k != "track_xy"}
            for s in _messages(p, "status/sim")
        ]
        for p in runs
    ]
    assert truths[0] == truths[1]  # bit-identical ground truth from the seed
    last = truths[0][-1]
    assert last["sim_t_s"] >= 2.49 and last["progress_m"] > 1.0  # a fixed distance ...
    assert last["collisions"] == 0 and abs(last["cross_track_m"]) < 0.05  # ... on the line
    answers = [_answers(p) for p in runs]
    # offline replay of the recording through the same graph: the same commands
    out = tmp_path / "offline.mcap"
    rr = subprocess.run(
        [sys.executable, "-m", "spikefuse", "replay", str(runs[0]), "--offline", "--graph",
         str(REPO / "configs/graphs/sim_line.yaml"), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rr.returncode == 0, rr.stderr
    # the same answer at every sync both recordings hold (whether the recorder had joined
    # the core by its first answers depends on the machine's load)
    common = answers[0].keys() & answers[1].keys()
    assert len(common) >= 200 and all(answers[0][t] == answers[1][t] for t in common)
    assert len(set(answers[0].values())) > 50  # the wheels were steered
    # The live core answers each sync's heartbeat with one command (what the world applies
    # at that step, stamped with its time); offline replay writes every change of the
    # output. Every live command is offline's last one at or before its time: the same
    # values and the same cause (sample time), bit for bit.
    offline = _messages(out, "motor/wheels_out")
    times = [m.t_ns for m in offline]
    live = _messages(runs[0], "motor/wheels")
    assert [m.seq for m in live] == list(range(live[0].seq, live[0].seq + len(live)))
    assert len(live) >= 240  # one a sync (10 ms of sim time)
    # the driver closed its stream once, stamped at its last sync: the core's answer to that
    # (and anything after it) has its inputs ended, so the wheels get their fallback
    # (on_stale: safe), which offline replay (the graph's outputs) does not model
    ends = [
        m
        for m in batches[0]
        if isinstance(m, Heartbeat) and m.state == "ended" and m.detail == "the run is over"
    ]
    assert len(ends) == 1
    after = [m for m in live if m.t_ns >= ends[0].t_ns][1:]  # [0]: the last sync's answer
    assert all(m.values.tolist() == [0.0, 0.0] for m in after)
    for m in live[: len(live) - len(after)]:
        k = bisect.bisect_right(times, m.t_ns) - 1
        # before the first sample: the engine's initial output (the live core starts at
        # the first heartbeat, offline replay at the first sample)
        if k < 0:
            assert m.values.tolist() == offline[0].values.tolist()
            continue
        assert (offline[k].cause_t_ns, offline[k].values.tolist()) == (
            m.cause_t_ns,
            m.values.tolist(),
        )


def test_realtime_launch_end_to_end(tmp_path):
    r = _launch(
        tmp_path,
        "sim.yaml",
        "robot.world.renderer=numpy",
        "robot.laps=null",
        "robot.duration_s=5",
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:]
    out = r.stdout
    m = re.search(r"progress ([0-9.]+) m, collisions (\d+).*?(\d+) set-points", out)
    assert m, out[-3000:]
    # the robot drove (a starved machine simulates slower than real time: >= 1 s of 5)
    assert float(m.group(1)) > 0.4 and int(m.group(2)) == 0 and int(m.group(3)) > 20
    assert "sim summary:" in out and "engine ops vs the graph run densely" in out
    # the core's closing summary sets the camera's pre-encoded events against its pixels
    assert re.search(r"robot/camera +[0-9.]+ +[0-9.]+ +[0-9.]+ ", out), out[-3000:]
    assert "(no driver status)" not in out
    assert (tmp_path / "sim_run.png").stat().st_size > 10_000


def _start(tmp: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spikefuse", *argv, "--set", f"run_dir={tmp}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_killing_the_core_stops_the_wheels_within_the_deadman(tmp_path):
    cfg = REPO / "configs"
    procs = [
        _start(tmp_path, "driver", "sim", "--config", str(cfg / "drivers/sim_robot.yaml"),
               "--set", "world.renderer=numpy", "--set", "laps=null", "--set", "report.enabled=false"),
        _start(tmp_path, "core", "--config", str(cfg / "core/sim.yaml")),
        _start(tmp_path, "actuator", "sim", "--config", str(cfg / "actuators/sim.yaml")),
    ]  # fmt: skip
    core = procs[1]
    try:
        with (
            Subscriber(Endpoint.ipc(tmp_path, "robot"), ["status/sim"]) as truth,
            Subscriber(
                Endpoint.ipc(tmp_path, "wheels_setpoints"), ["motor/wheels_setpoints"]
            ) as setpoints,
        ):
            deadline = time.monotonic() + 120
            v = 0.0
            while v < 0.3:  # the core drives the robot
                assert time.monotonic() < deadline, "the robot never moved"
                for msg in truth.recv_many(0.5):
                    if isinstance(msg, Status) and msg.source == "sim":
                        v = msg.metrics["v_mps"]
                setpoints.recv_many(0)
            core.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            safe_at = None
            while safe_at is None:
                assert time.monotonic() - killed < 5, "no safe set-point after the core died"
                for msg in setpoints.recv_many(0.2):
                    if isinstance(msg, MotorCommand) and msg.cause_t_ns < 0:
                        assert np.all(msg.values == 0.0)
                        safe_at = time.monotonic()
            # deadman 100 ms (+ a wide margin for a loaded machine)
            assert safe_at - killed < 0.1 + 1.0
            while v > 0.05:  # and the world's wheels stop
                assert time.monotonic() - safe_at < 5, f"still moving at {v} m/s"
                for msg in truth.recv_many(0.2):
                    if isinstance(msg, Status) and msg.source == "sim":
                        v = msg.metrics["v_mps"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    assert procs[0].returncode == 0 and procs[2].returncode == 0


def test_teacher_recording_holds_the_core_streams_and_the_teacher_commands(tmp_path):
    r = _launch(
        tmp_path,
        "sim_teacher.yaml",
        "robot.laps=null",
        "robot.duration_s=2",
        "robot.world.seed=5",
        SIM_TEACHER_OUT="t5.mcap",
    )
    assert r.returncode == 0, r.stdout[-4000:]
    path = tmp_path / "t5.mcap"
    inputs = {m.input for m in _messages(path, "sensor/robot") if hasattr(m, "input")}
    assert inputs == {"camera", "gyro", "accel", "wheels"}
    teacher = _messages(path, "motor/teacher")
    assert len(teacher) >= 150  # 100 Hz for 2 s of sim time
    assert all(m.values.shape == (2,) and m.cause_t_ns == m.t_ns for m in teacher)
    assert np.mean([m.values.mean() for m in teacher]) > 5.0  # driving forward (rad/s)
    truth = [s.metrics for s in _messages(path, "status/sim")]
    assert truth[-1]["progress_m"] > 0.5 and truth[-1]["collisions"] == 0
    # randomised start: not the track's start point
    assert (truth[0]["x_m"], truth[0]["y_m"]) != (0.0, -1.0)
