"""What the actuators say and do in the imu_gimbal demo, over real sockets and processes:
refresh commands are labelled (no growing "latency"), a roll command near upside down keeps
its limit instead of flipping between the limits, and the gimbal panel has no wraps."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
from _core_util import spawn, stop, wait_until, write_yaml

from spikefuse.actuators.gimbal import levelling_series
from spikefuse.protocol import MotorCommand
from spikefuse.transport.publisher import Publisher


def _rows(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return [r for r in csv.reader(fh) if r and r[0] != "t_ns"]


def test_console_labels_refresh_commands_without_latency(tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    cfg = write_yaml(
        tmp_path / "c.yaml",
        {"run_dir": str(tmp_path), "csv": str(out), "print_hz": 10_000, "deadman_ms": 5000},
    )
    with Publisher(f"ipc://{tmp_path}/core.sock") as pub:
        act = spawn("actuator", "console", "--config", str(cfg))
        try:
            assert pub.wait_for_subscribers(1, 30.0)

            def warm() -> bool:  # until the subscription is through (slow joiner)
                now = time.monotonic_ns()
                pub.send(MotorCommand("motors", 0, now, now, np.zeros(2)))
                return any(r[1] == "cmd" for r in _rows(out))

            assert wait_until(warm, 30.0, 0.05)
            cause = time.monotonic_ns() - 3_000_000_000  # an input 3 s old
            for seq in range(1, 5):  # one new command, then three refreshes of it
                pub.send(MotorCommand("motors", seq, time.monotonic_ns(), cause, np.ones(2)))
                assert wait_until(lambda s=seq: any(r[2] == str(s) for r in _rows(out)), 10.0, 0.01)
                time.sleep(0.01)  # (distinct print times)
        finally:
            assert stop(act) == 0
    lines = [ln for ln in act.stdout.read().splitlines() if ln.startswith("motors cmd [+1")]
    assert len(lines) == 4, lines
    assert "latency" in lines[0] and "refresh" not in lines[0]
    for ln in lines[1:]:
        assert "latency" not in ln and "(refresh: unchanged for 3." in ln, ln


def _up(roll_deg: float) -> list[float]:
    r = math.radians(roll_deg)
    return [0.0, math.sin(r), math.cos(r)]


def test_gimbal_roll_near_upside_down_keeps_its_limit(tmp_path: Path) -> None:
    out = tmp_path / "g.csv"
    cfg = write_yaml(
        tmp_path / "g.yaml",
        {
            "name": "gimbal",
            "run_dir": str(tmp_path),
            "n_channels": 3,
            "roll_limit_deg": 60,
            "deadman_ms": 5000,
            "csv": str(out),
            "print_hz": 0,
        },
    )
    # body roll 170 deg, then jittering around 180 (atan2 flips sign), then 150: the
    # correction needs the limit -60 all along (+60 would be 60 deg worse)
    rolls = [170, 178, 179.5, -179.5, 179.8, -178, -176, 179, 150]
    with Publisher(f"ipc://{tmp_path}/core.sock") as pub:
        act = spawn("actuator", "gimbal", "--config", str(cfg))
        try:
            assert pub.wait_for_subscribers(1, 30.0)
            for seq, roll in enumerate(rolls):
                now = time.monotonic_ns()
                pub.send(MotorCommand("gimbal", seq, now, now, np.array(_up(roll))))
            assert wait_until(lambda: len(_rows(out)) >= len(rolls) + 1, 10.0, 0.01)
        finally:
            assert stop(act) == 0
    cmds = [math.degrees(float(r[4])) for r in _rows(out) if r[1] == "cmd"]
    assert len(cmds) == len(rolls)
    assert np.allclose(cmds, -60.0), cmds
    # past the hysteresis the other limit is taken: one swing, not one per flip
    r, _ = levelling_series(
        np.array([_up(a) for a in [170, 179, -179, -177, -165, -150]]),
        math.radians(60),
        math.radians(60),
        math.radians(10),
    )
    assert np.round(np.degrees(r)).tolist() == [-60, -60, -60, -60, 60, 60]


def test_gimbal_panel_series_has_no_wraps(shared_data: Path) -> None:
    from spikefuse.attitude.plot import gimbal_command_deg, levelling_deg
    from spikefuse.attitude.quat import up_from_quat
    from spikefuse.tables import load_table

    q = load_table(shared_data / "broad/broad_02_undisturbed_slow_rotation.csv.gz").extra["gt_quat"]
    up = up_from_quat(q[np.all(np.isfinite(q), axis=1)])
    r, p = gimbal_command_deg(up)
    assert np.all(np.abs(r) <= 60.0 + 1e-9) and np.all(np.abs(p) <= 60.0 + 1e-9)
    # the only big steps are swings between the limits (120 deg), never a 360 deg wrap;
    # and fewer of them than with the plain atan2 angle clamped
    steps = np.abs(np.diff(r))
    assert steps.max() <= 120.0 + 1e-9
    plain = np.abs(np.diff(np.clip(levelling_deg(up)[0], -60, 60)))
    assert np.count_nonzero(steps > 100) < np.count_nonzero(plain > 100)
