"""Acceptance: the attitude graph on real recordings. BROAD trial 02 against ground truth
(issue targets, inclination and heading), and VQF agreement (6D inclination, 9D heading) on
the VQF log, the x-io log and the DVXplorer IMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikefuse.attitude.evaluate import evaluate_attitude
from spikefuse.tables import load_aedat_imu, load_table

# the trial-02 fixture runs the whole 186 s log through every estimator, including the 9D
# graph evaluated frame by frame in Python (~2 min alone on a busy 2-core machine)
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def trial02(shared_data: Path) -> dict:
    table = load_table(shared_data / "broad" / "broad_02_undisturbed_slow_rotation.csv.gz")
    return evaluate_attitude(table).fields


def test_trial02_inclination_targets(trial02: dict) -> None:
    f = trial02
    assert f["n_scored"] > 30000
    assert f["incl_rmse_deg"] <= 0.75  # 0.622 measured (VQF 0.429)
    assert f["incl_rmse_deg_multirate"] <= 0.8  # 0.649 measured
    # the baselines behave as the issue describes
    assert f["vqf_incl_rmse_deg"] < 0.6
    assert f["gyro_only_incl_rmse_deg"] > 10.0
    assert f["flags"] == []


def test_trial02_event_work_vs_dense(trial02: dict) -> None:
    f = trial02
    assert f["ops_ratio_vs_dense"] <= 0.25  # 0.189 measured (issue target for slow: 0.3)
    # the event run is no worse than the same graph run densely (which gets the raw gyro,
    # bias included, with no encoder auto-zero) plus 0.15 degrees
    assert f["incl_rmse_deg"] <= f["dense_incl_rmse_deg"] + 0.15
    # still phases cost next to nothing compared with motion
    assert f["rest_ops_per_s"] < 0.01 * f["ops_per_s"]


def test_trial02_heading(trial02: dict) -> None:
    """Heading (9D graph, BROAD's ENU ground truth is magnetic north; trial 02 is
    undisturbed). Threshold 3 degrees: VQF 9D scores 1.3 degrees here, and a tilt error
    of the 0.8 degrees our gravity tracker leaves turns into up to tan(dip) = 2.6 times as
    much heading through the horizontal projection of the field (dip ~69 degrees here)."""
    f = trial02
    assert f["with_mag"] is True
    assert f["heading_rmse_deg"] <= 3.0
    assert f["heading_rmse_deg_multirate"] <= 3.5  # mag 20 Hz, accel 50 Hz
    assert f["heading_rmse_deg"] <= f["dense_heading_rmse_deg"] + 0.5
    assert f["vqf_heading_rmse_deg"] < 2.0 and f["vqf_heading_rmse_deg_multirate"] < 2.0
    # the norm + dip rejection switches the (uncalibrated, |B| 41-48 uT) magnetometer off
    # a few per cent of the time on this undisturbed trial
    assert f["mag_untrusted_frac"] < 0.2  # 0.13 measured: each rejection ~1 s re-trust delay
    # the 9D graph meets the work target of the 6D one
    assert f["ops_ratio_vs_dense_9d"] <= 0.25  # 0.189 measured
    # a slower accelerometer/magnetometer saves their input events but their bigger steps
    # run through the trackers' sums (gd, nd) as more quanta at once: about even
    assert f["ops_per_s_multirate_9d"] < 1.05 * f["ops_per_s_9d"]


@pytest.mark.parametrize(
    ("rel", "max_deg", "max_heading_deg"),
    # x-io: the log has a deliberate magnetic disturbance (~100-120 s, |B| -14 %) that
    # both reject, VQF also by the dip angle, ours by the field norm alone
    [("vqf/imu_data.npz", 2.0, 3.0), ("xio/sensor_data.csv", 3.0, 5.0)],
)
def test_agrees_with_vqf_on_other_logs(
    shared_data: Path, rel: str, max_deg: float, max_heading_deg: float
) -> None:
    f = evaluate_attitude(load_table(shared_data / rel)).fields
    assert f["ground_truth"] is False
    assert f["incl_rmse_vs_vqf_deg"] <= max_deg
    assert f["incl_rmse_vs_vqf_deg_multirate"] <= max_deg
    assert f["ops_ratio_vs_dense"] < 0.3
    assert f["with_mag"] is True
    assert f["heading_rmse_vs_vqf_deg"] <= max_heading_deg
    assert f["heading_rmse_vs_vqf_deg_multirate"] <= max_heading_deg + 1.0


def test_dvxplorer_imu(shared_data: Path) -> None:
    table = load_aedat_imu(shared_data / "dvxplorer" / "sample.aedat4")
    assert len(table) == 475 and 700 < table.rate_hz < 900
    f = evaluate_attitude(table).fields
    assert f["incl_rmse_vs_vqf_deg"] <= 3.0
    assert f["flags"] == []
