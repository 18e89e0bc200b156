"""spikefuse.tables: real recordings read in place, and bad files rejected with file:line."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from spikefuse.errors import ConfigError, LogFileError
from spikefuse.tables import (
    PRESETS,
    ColumnGroup,
    TableMapping,
    detect_preset,
    load_mapping,
    load_table,
)

BROAD = "broad/broad_02_undisturbed_slow_rotation.csv.gz"


def test_broad_real_file(shared_data: Path) -> None:
    t = load_table(shared_data / BROAD)  # preset guessed from the name
    assert len(t) == 53240
    assert t.t_ns.dtype == np.int64 and t.t_ns[0] == 0
    assert np.all(np.diff(t.t_ns) > 0)
    assert abs(t.rate_hz - 285.714) < 0.01
    for g in ("gyro", "accel", "mag"):
        assert t.groups[g].shape == (53240, 3) and t.groups[g].dtype == np.float64
    # first row from the file: acc_z 9.850261 m/s², gyr_x 0.003195698 rad/s, mag_z -42.70474 µT
    assert t.groups["accel"][0, 2] == pytest.approx(9.850261)
    assert t.groups["gyro"][0, 0] == pytest.approx(0.003195698)
    assert t.groups["mag"][0, 2] == pytest.approx(-42.70474)
    q = t.extra["gt_quat"]
    assert q.shape == (53240, 4)
    assert np.isnan(q[0]).all()  # NaN cells kept as NaN
    valid = ~np.isnan(q).any(axis=1)
    assert valid.sum() > 40000
    assert np.allclose(np.linalg.norm(q[valid], axis=1), 1.0, atol=1e-3)
    mv = t.extra["movement"]
    assert mv.shape == (53240,) and set(np.unique(mv)) == {0.0, 1.0}
    # gravity magnitude in SI
    assert np.median(np.linalg.norm(t.groups["accel"], axis=1)) == pytest.approx(9.81, abs=0.1)


def test_vqf_npz_no_time(shared_data: Path) -> None:
    t = load_table(shared_data / "vqf" / "imu_data.npz", preset="vqf")
    assert len(t) == 13500
    assert t.t_ns[1] - t.t_ns[0] == round(1e9 / 285.714)
    assert t.t_ns[-1] == round(13499 * 1e9 / 285.714)
    z = np.load(shared_data / "vqf" / "imu_data.npz")
    assert np.array_equal(t.groups["gyro"], z["gyr"].astype(np.float64))


def test_xio_units_and_jitter(shared_data: Path) -> None:
    path = shared_data / "xio" / "sensor_data.csv"
    assert detect_preset(path) == "xio"
    t = load_table(path)
    assert len(t) == 13514
    dt_ms = np.diff(t.t_ns) / 1e6
    assert dt_ms.min() < 9 and dt_ms.max() > 25  # jitter kept, not resampled
    # accel in g -> m/s²; gyro deg/s -> rad/s
    assert np.median(np.linalg.norm(t.groups["accel"], axis=1)) == pytest.approx(9.81, abs=0.15)
    assert t.groups["gyro"][0, 1] == pytest.approx(-0.1517251 * math.pi / 180)


def test_yaml_configs_mirror_presets(repo_root: Path) -> None:
    for name, preset in PRESETS.items():
        assert load_mapping(repo_root / "configs" / "tables" / f"{name}.yaml") == preset


def _write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as fh:
            fh.write(text)
    else:
        p.write_text(text)
    return p


MAP = TableMapping(
    time_column="t",
    time_unit="ms",
    groups={"gyro": ColumnGroup(columns=["a", "b", "c"], unit="deg/s")},
    extra={"flag": ["f"]},
)


def test_custom_mapping_gz_and_nan(tmp_path: Path) -> None:
    p = _write(tmp_path, "t,a,b,c,f\n0,1,2,3,0\n10,nan,,180,1\n", "x.csv.gz")
    t = load_table(p, MAP)
    assert t.t_ns.tolist() == [0, 10_000_000]
    assert t.groups["gyro"][0] == pytest.approx(np.deg2rad([1, 2, 3]))
    assert np.isnan(t.groups["gyro"][1, 0]) and np.isnan(t.groups["gyro"][1, 1])
    assert t.groups["gyro"][1, 2] == pytest.approx(math.pi)
    assert t.extra["flag"].tolist() == [0.0, 1.0]


def test_missing_column_names_it(tmp_path: Path) -> None:
    p = _write(tmp_path, "t,a,b,f\n0,1,2,0\n")
    with pytest.raises(ConfigError, match=r"log\.csv:1.*'c'"):
        load_table(p, MAP)


def test_non_numeric_cell_names_line_and_column(tmp_path: Path) -> None:
    p = _write(tmp_path, "t,a,b,c,f\n0,1,2,3,0\n1,1,2,3,0\n2,1,oops,3,0\n")
    with pytest.raises(LogFileError, match=r"log\.csv:4: column 'b': 'oops' is not a number"):
        load_table(p, MAP)


def test_ragged_row(tmp_path: Path) -> None:
    p = _write(tmp_path, "t,a,b,c,f\n0,1,2,3,0\n1,1,2\n")
    with pytest.raises(LogFileError, match=r"log\.csv:3: row has 3 cells"):
        load_table(p, MAP)


def test_time_backwards(tmp_path: Path) -> None:
    p = _write(tmp_path, "t,a,b,c,f\n0,1,2,3,0\n5,1,2,3,0\n4,1,2,3,0\n")
    with pytest.raises(LogFileError, match=r"log\.csv:4: column 't': time goes backwards"):
        load_table(p, MAP)


def test_time_nan(tmp_path: Path) -> None:
    p = _write(tmp_path, "t,a,b,c,f\n0,1,2,3,0\nnan,1,2,3,0\n")
    with pytest.raises(LogFileError, match=r"log\.csv:3: column 't'"):
        load_table(p, MAP)


def test_empty_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(LogFileError, match="no data rows"):
        load_table(_write(tmp_path, "t,a,b,c,f\n"), MAP)
    with pytest.raises(LogFileError, match="not found"):
        load_table(tmp_path / "nope.csv", MAP)
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(LogFileError, match="cannot read"):
        load_table(bad, MAP)


def test_npz_errors(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, gyr=np.zeros((5, 3)), acc=np.zeros((4, 3)), mag=np.zeros((5, 3)))
    with pytest.raises(LogFileError, match="different lengths"):
        load_table(p, preset="vqf")
    np.savez(p, gyr=np.zeros((5, 2)), acc=np.zeros((5, 3)), mag=np.zeros((5, 3)))
    with pytest.raises(ConfigError, match=r"'gyr'.*no column 2"):
        load_table(p, preset="vqf")
    np.savez(p, gyr=np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="array 'acc' not in the file"):
        load_table(p, preset="vqf")


def test_mapping_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="time_column"):
        TableMapping(groups={"g": ColumnGroup(columns=["a", "b", "c"], unit="g")})
    with pytest.raises(ValueError):
        ColumnGroup(columns=["a", "b"], unit="g")
    with pytest.raises(ValueError):
        ColumnGroup(columns=["a", "b", "c"], unit="furlong/s")
    y = tmp_path / "m.yaml"
    y.write_text("time_column: t\ngroups:\n  gyro:\n    columns: [a, b, c]\n    unit: rad/sec\n")
    with pytest.raises(ConfigError, match=r"m\.yaml:5: groups\.gyro\.unit"):
        load_mapping(y)
    with pytest.raises(ConfigError, match="unknown table preset"):
        load_table(tmp_path / "x.csv", preset="nope")
    with pytest.raises(LogFileError, match="x.csv: file not found"):
        load_table(tmp_path / "x.csv")


def test_layout_detected_from_the_header_not_the_name(shared_data: Path, tmp_path: Path) -> None:
    """A BROAD table renamed, an x-io table named like BROAD, the VQF arrays under another
    name: each is read with the layout its columns have."""
    import shutil

    broad = shared_data / "broad" / "broad_02_undisturbed_slow_rotation.csv.gz"
    renamed = tmp_path / "trial.csv"
    with gzip.open(broad, "rb") as src, open(renamed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert detect_preset(renamed) == "broad"
    assert "gt_quat" in load_table(renamed).extra
    xio_like_broad = tmp_path / "broad" / "broad_99.csv"
    xio_like_broad.parent.mkdir()
    shutil.copy(shared_data / "xio" / "sensor_data.csv", xio_like_broad)
    assert detect_preset(xio_like_broad) == "xio" and len(load_table(xio_like_broad)) == 13514
    npz = tmp_path / "mine.npz"
    shutil.copy(shared_data / "vqf" / "imu_data.npz", npz)
    assert detect_preset(npz) == "vqf"


def test_unknown_layout_names_preset_and_the_known_presets(tmp_path: Path) -> None:
    junk = tmp_path / "broad_junk.csv"
    junk.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ConfigError) as err:
        load_table(junk)
    msg = str(err.value)
    assert str(junk) in msg and "'a', 'b', 'c'" in msg
    assert "--preset NAME (known presets: broad, vqf, xio)" in msg and "--mapping FILE" in msg
