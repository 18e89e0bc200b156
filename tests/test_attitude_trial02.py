"""Acceptance: the attitude graph on real recordings. BROAD trial 02 against ground truth
(issue targets), and VQF agreement on the VQF log, the x-io log and the DVXplorer IMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikefuse.attitude.evaluate import evaluate_attitude
from spikefuse.tables import load_aedat_imu, load_table


@pytest.fixture(scope="module")
def trial02(shared_data: Path) -> dict:
    table = load_table(shared_data / "broad" / "broad_02_undisturbed_slow_rotation.csv.gz")
    return evaluate_attitude(table).fields


def test_trial02_inclination_targets(trial02: dict) -> None:
    f = trial02
    assert f["n_scored"] > 30000
    assert f["incl_rmse_deg"] <= 1.0
    assert f["incl_rmse_deg_multirate"] <= 1.2
    # the baselines behave as the issue describes
    assert f["vqf_incl_rmse_deg"] < 0.6
    assert f["gyro_only_incl_rmse_deg"] > 10.0
    assert f["flags"] == []


def test_trial02_event_work_vs_dense(trial02: dict) -> None:
    f = trial02
    assert f["ops_ratio_vs_dense"] <= 0.2
    assert f["incl_rmse_deg"] <= f["dense_incl_rmse_deg"] + 0.1
    # still phases cost next to nothing compared with motion
    assert f["rest_ops_per_s"] < 0.01 * f["ops_per_s"]


@pytest.mark.parametrize(
    ("rel", "max_deg"),
    [("vqf/imu_data.npz", 2.0), ("xio/sensor_data.csv", 3.0)],
)
def test_agrees_with_vqf_on_other_logs(shared_data: Path, rel: str, max_deg: float) -> None:
    f = evaluate_attitude(load_table(shared_data / rel)).fields
    assert f["ground_truth"] is False
    assert f["incl_rmse_vs_vqf_deg"] <= max_deg
    assert f["incl_rmse_vs_vqf_deg_multirate"] <= max_deg
    assert f["ops_ratio_vs_dense"] < 0.3


def test_dvxplorer_imu(shared_data: Path) -> None:
    table = load_aedat_imu(shared_data / "dvxplorer" / "sample.aedat4")
    assert len(table) == 475 and 700 < table.rate_hz < 900
    f = evaluate_attitude(table).fields
    assert f["incl_rmse_vs_vqf_deg"] <= 3.0
    assert f["flags"] == []
