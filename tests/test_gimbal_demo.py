"""The imu_gimbal demo: the gimbal actuator's levelling convention (against quaternions and
BROAD's ground truth), the gimbal process over a real socket (angles, limits, undefined
vectors, deadman), ``spikefuse eval attitude --plot`` and a short launch of the demo."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _core_util import LineReader, spawn, stop, wait_until, write_yaml

from spikefuse.actuators.gimbal import levelling_command, tilt_from_up
from spikefuse.attitude.quat import qmul, up_from_quat
from spikefuse.protocol import MotorCommand
from spikefuse.transport.publisher import Publisher

BROAD = "broad/broad_02_undisturbed_slow_rotation.csv.gz"


def _axis_quat(axis: int, angle_rad: float) -> np.ndarray:
    q = np.zeros(4)
    q[0] = math.cos(angle_rad / 2)
    q[1 + axis] = math.sin(angle_rad / 2)
    return q


def _zyx(roll: float, pitch: float, yaw: float) -> np.ndarray:
    return qmul(qmul(_axis_quat(2, yaw), _axis_quat(1, pitch)), _axis_quat(0, roll))


def test_levelling_command_cancels_the_tilt() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        roll, yaw = rng.uniform(-math.pi, math.pi, 2)
        pitch = rng.uniform(-1.5, 1.5)
        q = _zyx(roll, pitch, yaw)
        g = up_from_quat(q)
        assert tilt_from_up(g) == pytest.approx((roll, pitch), abs=1e-9)
        r_cmd, p_cmd, limited = levelling_command(g)
        assert not limited
        # roll axis on the body, pitch axis inside it: the platform ends up level
        platform = qmul(qmul(q, _axis_quat(0, r_cmd)), _axis_quat(1, p_cmd))
        assert up_from_quat(platform) == pytest.approx([0.0, 0.0, 1.0], abs=1e-9)
    r, p, limited = levelling_command(np.array([0.0, math.sin(1.0), math.cos(1.0)]), 0.5, 0.5)
    assert (r, p, limited) == (pytest.approx(-0.5), pytest.approx(0.0), True)


def test_convention_matches_broad_accelerometer_and_truth(shared_data: Path) -> None:
    """During the slow rotations the accelerometer is close to the up vector: its roll/pitch
    must match those of the ground-truth quaternion (a sign flip would not)."""
    from spikefuse.tables import load_table

    t = load_table(shared_data / BROAD)
    gyr, acc = t.groups["gyro"], t.groups["accel"]
    gt = t.extra["gt_quat"]
    still = (
        (np.linalg.norm(gyr, axis=1) < 0.5)
        & (np.abs(np.linalg.norm(acc, axis=1) - 9.81) < 0.2)
        & np.all(np.isfinite(gt), axis=1)
    )
    idx = np.flatnonzero(still)
    up_true = up_from_quat(gt[idx])
    tilts = np.degrees(np.arccos(np.clip(up_true[:, 2], -1, 1)))
    keep = (np.abs(up_true[:, 0]) < 0.9) & (tilts > 5.0)  # away from gimbal lock, tilted
    assert keep.sum() > 500
    diffs = []
    for a, u in zip(acc[idx][keep], up_true[keep], strict=True):
        ra, pa = tilt_from_up(a)
        rt, pt = tilt_from_up(u)
        diffs.append((math.remainder(ra - rt, 2 * math.pi), pa - pt))
    err_deg = np.degrees(np.abs(np.array(diffs)))
    assert np.median(err_deg) < 3.0, np.median(err_deg, axis=0)


def _read_rows(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [ln.split(",") for ln in path.read_text().splitlines()[1:] if ln.count(",") == 6]


def test_gimbal_process_angles_limits_deadman(tmp_path: Path) -> None:
    csv = tmp_path / "gimbal.csv"
    cfg = write_yaml(
        tmp_path / "gimbal.yaml",
        {
            "name": "gimbal",
            "run_dir": str(tmp_path),
            "n_channels": 4,
            "gravity_channels": [1, 2, 3],  # channel 0 is something else
            "roll_limit_deg": 60,
            "pitch_limit_deg": 30,
            "safe_deg": [0.0, 5.0],
            "deadman_ms": 150,
            "csv": str(csv),
            "print_hz": 0,
        },
    )
    pub = Publisher(f"ipc://{tmp_path}/core.sock")
    act = spawn("actuator", "gimbal", "--config", str(cfg))
    s30, c30 = math.sin(math.radians(30)), math.cos(math.radians(30))
    s20, c20 = math.sin(math.radians(20)), math.cos(math.radians(20))
    cases = [
        ([9.0, 0.0, s30, c30], "cmd", (-30.0, 0.0), 0),  # roll 30 deg
        ([9.0, -s20, 0.0, c20], "cmd", (0.0, -20.0), 0),  # pitch 20 deg (nose up: g_x < 0)
        ([9.0, 0.0, 0.0, -1.0], "cmd", (-60.0, 0.0), 1),  # upside down: roll 180 -> limit
        ([9.0, 0.7, 0.0, 0.7], "cmd", (0.0, 30.0), 1),  # pitch -45 deg -> limit 30
        ([9.0, 0.0, 0.0, 0.0], "undefined", (0.0, 5.0), 0),  # no tilt defined -> safe
        ([9.0, 0.0, 0.01, 0.02], "undefined", (0.0, 5.0), 0),  # |g| < min_norm
    ]
    try:
        assert pub.wait_for_subscribers(1, 10.0)

        def first():
            now = time.monotonic_ns()
            pub.send(MotorCommand("gimbal", 0, now, now, np.zeros(4)))  # undefined: safe
            return any(r[1] == "undefined" for r in _read_rows(csv))

        assert wait_until(first, 10.0, 0.02), "gimbal never received a command"
        for i, (vals, *_rest) in enumerate(cases):
            now = time.monotonic_ns()
            pub.send(MotorCommand("gimbal", i + 1, now, now, np.asarray(vals, np.float64)))
        t_last = time.monotonic_ns()
        seqs = {str(i + 1) for i in range(len(cases))}
        got = wait_until(
            lambda: (
                (r := [x for x in _read_rows(csv) if x[2] in seqs]) and len(r) == len(cases) and r
            ),
            3.0,
        )
        assert got, _read_rows(csv)
        for row, (_vals, kind, deg, limited) in zip(got, cases, strict=True):
            assert row[1] == kind, row
            ang = np.degrees([float(row[4]), float(row[5])])
            assert ang == pytest.approx(deg, abs=1e-9), row
            assert int(row[6]) == limited
        safe = wait_until(
            lambda: [r for r in _read_rows(csv) if r[1] == "safe" and int(r[0]) > t_last], 2.0
        )
        assert safe, "no deadman safe row"
        assert 100 <= (int(safe[0][0]) - t_last) / 1e6 <= 150 + 400
        assert np.degrees([float(safe[0][4]), float(safe[0][5])]) == pytest.approx([0.0, 5.0])
    finally:
        assert stop(act) == 0
        pub.close()
    out = act.stdout.read()
    assert "DEADMAN" in out and "gimbal cmd roll" in out


def test_gimbal_config_errors_exit_2(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "spikefuse", "actuator", "gimbal"]
        + ["--set", "n_channels=3", "--set", "gravity_channels=[0,1,3]"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "gravity_channels" in res.stderr


def test_eval_attitude_plot_on_a_slice(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "attitude.png"
    cmd = [sys.executable, "-m", "spikefuse", "eval", "attitude", str(shared_data / BROAD)]
    cmd += ["--no-compare", "--set", "with_mag=false", "--start", "38", "--end", "58"]
    res = subprocess.run(cmd + ["--plot", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "spikefuse events, full rate" in res.stdout and str(out) in res.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 40_000 < len(data) < 2_000_000
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.shape[0] > 600 and img.shape[1] > 800
    assert img[..., :3].std() > 0.05  # not blank
    html = tmp_path / "attitude.html"
    res = subprocess.run(cmd + ["--plot", str(html)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "data:image/png;base64," in html.read_text()
    res = subprocess.run(cmd + ["--plot", str(tmp_path / "a.pdf")], capture_output=True, text=True)
    assert res.returncode == 2 and ".png or .html" in res.stderr
    bad = cmd[:-4] + ["--start", "500"]
    res = subprocess.run(bad, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--start/--end" in res.stderr


def test_attitude_series_counts_and_gimbal_agree_with_truth(shared_data: Path) -> None:
    from spikefuse.attitude.plot import attitude_series, levelling_deg
    from spikefuse.tables import load_table

    t = load_table(shared_data / BROAD)
    t = t.slice(int(38 * t.rate_hz), int(58 * t.rate_hz))
    s = attitude_series(t, vqf=False)
    assert s.push_events.sum() == s.n_events_in > 1000
    assert np.all(s.push_spikes >= s.push_events)
    # more change-events per second while moving than at rest (first 2 s are still)
    rest = s.push_t_s < 1.9
    assert s.push_events[rest].sum() / 1.9 < 0.5 * s.push_events[~rest].sum() / 18.0
    # the gimbal command from the graph's estimate tracks the one from the truth
    ok = s.scored & (np.abs(up_from_quat(s.q_truth)[:, 0]) < 0.9)
    r, p = levelling_deg(s.up_event[ok])
    rt, pt = levelling_deg(up_from_quat(s.q_truth[ok]))
    d_roll = (r - rt + 180.0) % 360.0 - 180.0
    assert np.sqrt(np.mean(d_roll**2)) < 3.0 and np.sqrt(np.mean((p - pt) ** 2)) < 3.0


def test_imu_gimbal_launch_commands_the_gimbal(repo_root: Path, tmp_path: Path) -> None:
    env = dict(os.environ, SPIKEFUSE_RUN_DIR=str(tmp_path / "run"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(repo_root / "launch/imu_gimbal.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    reader = LineReader(proc)
    n_seen = [0]

    def eighth_print(line: str) -> bool:  # 3.5 s of the 2 Hz prints, however slow the start
        n_seen[0] += line.startswith("[gimbal] gimbal cmd roll")
        return n_seen[0] >= 8

    try:
        assert reader.wait_for(eighth_print, 120.0) is not None, reader.text()[-3000:]
    finally:
        rc = stop(proc, 20.0)
    reader.join(10.0)
    out = reader.text()
    assert rc == 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("[gimbal] gimbal cmd roll")]
    # the first seconds of trial 02: the IMU rests within 2 deg of level
    for ln in lines:
        w = ln.split()
        roll_rad, pitch_rad = float(w[4]), float(w[9])
        assert abs(roll_rad) < math.radians(5) and abs(pitch_rad) < math.radians(5), ln
    # the still IMU sends nothing: the core refreshes the unchanged command, and those lines
    # say so instead of a "latency" growing with the time since the last change
    lat_us = [int(ln.split("latency ")[1].split()[0]) for ln in lines if "latency " in ln]
    assert all(v < 1_000_000 for v in lat_us), lat_us
    assert any("(refresh: unchanged for" in ln for ln in lines), lines
    # a live core (20 Hz refresh) never trips the 500 ms deadman, even on a loaded machine
    assert "DEADMAN" not in out, out[-3000:]
    m = [ln for ln in out.splitlines() if "actuator 'gimbal':" in ln]
    assert m and int(m[0].split(":")[1].split()[0]) > 50  # commands received (20 Hz refresh)
