"""Attitude on every kind of motion (issue 10), on short excerpts of the shared BROAD trials
(read in place): one excerpt per motion class, the event-driven graph (shipped parameters)
scored against VQF in the same run, and the unit-sphere property of the tracked gravity
vector on the fast trials. Each excerpt starts a few seconds before its motion phase (the
still start lets both estimators settle, as in the full trials).

The ratio bounds are what the graph holds with a ~20 % margin (a guard against
regressions); measured on these excerpts: inclination 1.23x VQF 6D (fast rotation; 2.44x
before the output lead), 2.31x (fast translation: 1.74x before the encoders' rest options,
which leave the accelerometer's reconstruction on one level at rest instead of dithering
with its noise, so this excerpt, 10 s still before the motion, starts off by up to half a
quantum; the full trial 1.43x -> 1.47x), 1.72x (tapping; 3.27x before the gyro
encoder's auto-zero), 1.38x (attached magnet), 1.10x (stationary magnet); heading 0.97x
VQF 9D (fast rotation), 1.14x (fast translation), 0.57x (attached magnet) and 2.21x
(stationary magnet; bound: the issue's 3x for magnetic trials) with the field correction
at 15 s and the field norm at a quarter of its threshold (before, 9 s and half the
threshold: 0.95x, 1.85x, 0.31x, 2.18x; the full trials 09 and 15 went 1.01x -> 0.81x and
1.75x -> 0.73x: a 40 s excerpt is a small sample of a heading error that the field's
quantization dominates). The
issue's inclination targets (<= 2x VQF 6D on every trial, median <= 1.5x) are
met on the full trials; docs/benchmarks.md has the full-trial table."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikefuse.attitude.generate import AttitudeParams
from spikefuse.attitude.tune import prepare, score

# (trial file, start s, seconds, inclination ratio bound, heading ratio bound or None)
EXCERPTS = {
    "fast_rotation": ("broad_09_undisturbed_fast_rotation_breaks.csv.gz", 20.0, 40.0, 1.4, 1.2),
    "fast_translation": ("broad_15_undisturbed_fast_translation.csv.gz", 30.0, 45.0, 2.8, 1.4),
    "tapping": ("broad_25_disturbed_tapping.csv.gz", 35.0, 45.0, 1.8, None),
    "magnet": ("broad_33_disturbed_attached_magnet.csv.gz", 36.0, 44.0, 1.55, 0.7),
    "stationary_magnet": (
        "broad_31_disturbed_stationary_magnet.csv.gz",
        20.0,
        45.0,
        1.35,
        3.0,
    ),
}


@pytest.fixture(scope="module")
def scored(shared_data: Path) -> dict[str, dict[str, float]]:
    out = {}
    for name, (fname, start_s, seconds, _, head) in EXCERPTS.items():
        log = prepare(shared_data / "broad" / fname, seconds=seconds, start_s=start_s)
        out[name] = score(log, AttitudeParams(), heading=head is not None, multirate=False)
    return out


@pytest.mark.parametrize("name", list(EXCERPTS))
def test_motion_class_within_ratio_of_vqf(scored: dict, name: str) -> None:
    _, _, _, incl_bound, head_bound = EXCERPTS[name]
    f = scored[name]
    assert f["incl_ratio"] <= incl_bound, f
    if head_bound is not None:
        assert f["heading_ratio"] <= head_bound, f


def test_9d_graph_is_quiet_at_rest_after_fast_rotation(shared_data: Path) -> None:
    """The 9D graph on the still phases between fast rotations (trial 09, 55-110 s: the end
    of one rotation phase, 11 s still, a rotation phase, 11 s still): the magnetometer's
    encoder quantizes a 40 ms moving average, so its noise no longer moves the smoothed
    field at rest; its references stand still; the gyro's and accelerometer's encoders go
    quiet at rest. Measured: 45 synaptic ops/s at rest (the graph before the encoders' rest
    options: 59; before the magnetometer's moving average: 118); 33 where VQF also detects
    rest (the loops converging after the motion and from the excerpt's start)."""
    fname = "broad_09_undisturbed_fast_rotation_breaks.csv.gz"
    log = prepare(shared_data / "broad" / fname, seconds=55.0, start_s=55.0)
    f = score(log, AttitudeParams(), heading=True, multirate=False)
    assert f["rest_ops_per_s"] <= 54.0, f
    assert f["rest_detected_ops_per_s"] <= 40.0, f


@pytest.mark.parametrize(("heading", "bound", "detected"), [(False, 2.0, 1.3), (True, 8.5, 6.0)])
def test_still_phone_vibration_costs_almost_nothing(
    shared_data: Path, heading: bool, bound: float, detected: float
) -> None:
    """Trial 27's first still phase (0-60 s: 45.7 s still, in which a phone lying on the IMU
    vibrates in bursts of 1.5 deg/s RMS, then the motion starts): the encoders' rest options
    (after 0.25 s without a count, a 0.25 s average and a wider threshold) keep the bursts
    and the accelerometer's noise out of the graph. Measured: 1.6 ops/s at rest 6D, 6.9 9D
    (the full trial: 2.7 and 11; the graph without the rest options: 118 and 176 on it);
    1.0 and 4.7 where VQF also detects rest."""
    fname = "broad_27_disturbed_phone_vibration.csv.gz"
    log = prepare(shared_data / "broad" / fname, seconds=60.0, start_s=0.0)
    f = score(log, AttitudeParams(), heading=heading, multirate=False)
    assert f["rest_ops_per_s"] <= bound, f
    assert f["rest_detected_ops_per_s"] <= detected, f


@pytest.mark.parametrize("heading", [False, True])
def test_stationary_magnet_work_within_the_fast_target(
    scored: dict, shared_data: Path, heading: bool
) -> None:
    """The issue's work target on fast motion (<= 0.6 of the dense run of the same graph)
    on the stationary-magnet excerpt, the fastest rotation of the shared trials. Measured:
    0.568 6D, 0.546 9D (the full trial: 0.590 and 0.575; before this round 0.637 and
    0.663)."""
    f = scored["stationary_magnet"]  # the 9D graph (scored with heading)
    if not heading:
        fname, start_s, seconds, _, _ = EXCERPTS["stationary_magnet"]
        log = prepare(shared_data / "broad" / fname, seconds=seconds, start_s=start_s)
        f = score(log, AttitudeParams(), heading=False, multirate=False)
    assert f["ops_ratio_vs_dense"] <= 0.6, f


@pytest.mark.parametrize("name", ["fast_rotation", "fast_translation"])
def test_gravity_stays_on_the_unit_sphere(scored: dict, name: str) -> None:
    """The renormalising feedback holds |g| within 4 % at up to 20 rad/s and 4 g (measured:
    within 2.1 %)."""
    assert scored[name]["gravity_norm_max_dev"] <= 0.04


# -- eval attitude DIR --------------------------------------------------------------------
def _head(src: Path, out: Path, seconds: float, rate_hz: float = 285.714) -> Path:
    """The header and the first ``seconds`` of a BROAD CSV."""
    with gzip.open(src, "rt") as fin, out.open("w") as fout:
        for i, line in enumerate(fin):
            if i > seconds * rate_hz:
                break
            fout.write(line)
    return out


def test_cli_eval_folder(tmp_path: Path, shared_data: Path) -> None:
    """A folder of logs: one row per log and the median/worst ratio to VQF; JSON with the
    per-trial fields and the summary; no progress bar into a pipe."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for stem, seconds in (
        ("broad_02_undisturbed_slow_rotation", 45.0),
        ("broad_09_undisturbed_fast_rotation_breaks", 35.0),
    ):
        _head(shared_data / "broad" / f"{stem}.csv.gz", logs / f"{stem}.csv", seconds)
    (logs / "notes.txt").write_text("not a log\n")
    cmd = [sys.executable, "-m", "spikefuse", "eval", "attitude", str(logs)]
    res = subprocess.run(
        cmd + ["--json", "--no-dense"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    f = json.loads(res.stdout)
    assert [Path(t["log"]).name for t in f["trials"]] == sorted(p.name for p in logs.glob("*.csv"))
    for t in f["trials"]:
        assert t["incl_ratio_vs_vqf"] == pytest.approx(t["incl_rmse_deg"] / t["vqf_incl_rmse_deg"])
        assert isinstance(t["heading_ratio_vs_vqf"], float)
        assert isinstance(t["ops_ratio_vs_dense"], float)  # from the fixed per-sample count
        assert "dense_incl_rmse_deg" not in t  # --no-dense: the dense run is skipped
    ratios = [t["incl_ratio_vs_vqf"] for t in f["trials"]]
    assert f["median_incl_ratio_vs_vqf"] == pytest.approx(float(np.median(ratios)))
    assert f["worst_incl_ratio_vs_vqf"] == pytest.approx(max(ratios))
    assert isinstance(f["median_heading_ratio_vs_vqf"], float)
    assert "\r" not in res.stderr  # no progress bar into a pipe
    # the table form, two files given one by one, without the baselines
    files = sorted(str(p) for p in logs.glob("*.csv"))
    res = subprocess.run(
        cmd[:-1] + files + ["--no-compare"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["log", "incl", "vqf", "ratio"]
    assert sum(ln.startswith("broad_") for ln in lines) == 2
    assert any(ln.startswith("median") for ln in lines)
    assert any(ln.startswith("worst") for ln in lines)
    # errors: a folder without logs, a single-log option with several logs
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run(cmd[:-1] + [str(empty)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no .csv" in res.stderr
    res = subprocess.run(
        cmd + ["--plot", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "--plot takes a single log" in res.stderr
    # a corrupt log among good ones: named, the others still scored, exit 1
    (logs / "broken.csv").write_bytes(b"\xfb\x00not a table")
    res = subprocess.run(
        cmd + ["--json", "--no-dense", "--no-compare"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 1 and "broken.csv" in res.stderr and "Traceback" not in res.stderr
    f = json.loads(res.stdout)
    assert len(f["trials"]) == 2 and [Path(x["log"]).name for x in f["failed"]] == ["broken.csv"]
