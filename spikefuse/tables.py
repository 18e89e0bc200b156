"""Read tabular IMU recordings (CSV, gzipped CSV, NPZ) into SI-unit arrays.

A :class:`TableMapping` says which columns hold what::

    time_column: t_s          # or null, then rate_hz gives the (uniform) sample rate
    time_unit: s              # s | ms | us | ns
    groups:                   # 3-axis sensor groups, converted to SI
      gyro:  {columns: [gyr_x, gyr_y, gyr_z], unit: rad/s}    # -> rad/s
      accel: {columns: [acc_x, acc_y, acc_z], unit: m/s^2}    # -> m/s^2
      mag:   {columns: [mag_x, mag_y, mag_z], unit: uT}       # -> µT
    extra:                    # other columns kept as they are
      gt_quat: [gt_qw, gt_qx, gt_qy, gt_qz]

In CSV files the names are header cells. In NPZ files a name is an array key (a 1-D
array) or ``key[i]``, column ``i`` of a 2-D array.

:data:`PRESETS` holds the mappings of the shared recordings (``broad``, ``vqf``, ``xio``);
``configs/tables/*.yaml`` mirror them. :func:`load_table` reads a file with a mapping, a
preset name, or (neither given) the preset whose columns the file has (its CSV header or
NPZ arrays, :func:`detect_preset`).

Bad input raises :class:`~spikefuse.errors.LogFileError` (unreadable file, non-numeric
cell, ragged row, non-monotonic time: naming ``file:line`` and the column) or
:class:`~spikefuse.errors.ConfigError` (bad mapping, a column the file does not have).
NaN cells (and empty cells) stay NaN: deciding what to do with them is the consumer's job.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from spikefuse.config import StrictModel, load_model
from spikefuse.errors import ConfigError, LogFileError

#: standard gravity, used to convert accelerations given in g
G0_M_S2 = 9.80665

Unit = Literal["rad/s", "deg/s", "m/s^2", "g", "uT", "gauss", "nT", "1"]

#: multiply a value in this unit by the factor to get SI (gyro rad/s, accel m/s², mag µT)
UNIT_TO_SI: dict[str, float] = {
    "rad/s": 1.0,
    "deg/s": math.pi / 180.0,
    "m/s^2": 1.0,
    "g": G0_M_S2,
    "uT": 1.0,
    "gauss": 100.0,
    "nT": 1e-3,
    "1": 1.0,
}

TIME_UNIT_NS: dict[str, int] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}

_NPZ_COL_RE = re.compile(r"^(?P<key>.+)\[(?P<idx>\d+)\]$")


class ColumnGroup(StrictModel):
    """Three columns (x, y, z) of one sensor and the unit they are written in."""

    columns: list[str] = Field(min_length=3, max_length=3)
    unit: Unit


class TableMapping(StrictModel):
    """Which columns of a table hold time, sensor groups and extra data."""

    time_column: str | None = None
    time_unit: Literal["s", "ms", "us", "ns"] = "s"
    rate_hz: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    groups: dict[str, ColumnGroup] = Field(default_factory=dict)
    extra: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_time(self) -> TableMapping:
        if self.time_column is None and self.rate_hz is None:
            raise ValueError("give time_column (timestamps in the file) or rate_hz (uniform rate)")
        if self.time_column is not None and self.rate_hz is not None:
            raise ValueError("give either time_column or rate_hz, not both")
        if not self.groups and not self.extra:
            raise ValueError("the mapping selects no columns (groups and extra are empty)")
        for name, cols in self.extra.items():
            if not cols:
                raise ValueError(f"extra '{name}' lists no columns")
        return self

    def columns(self) -> list[str]:
        """Every column name the mapping needs, in a stable order, without duplicates."""
        names: list[str] = []
        if self.time_column is not None:
            names.append(self.time_column)
        for g in self.groups.values():
            names.extend(g.columns)
        for cols in self.extra.values():
            names.extend(cols)
        return list(dict.fromkeys(names))


def _xyz(prefix: str, unit: str) -> ColumnGroup:
    return ColumnGroup(columns=[f"{prefix}_x", f"{prefix}_y", f"{prefix}_z"], unit=unit)


def _npz3(key: str, unit: str) -> ColumnGroup:
    return ColumnGroup(columns=[f"{key}[0]", f"{key}[1]", f"{key}[2]"], unit=unit)


def _xio3(sensor: str, unit: str) -> ColumnGroup:
    return ColumnGroup(columns=[f"{sensor} {a} ({unit})" for a in "XYZ"], unit=unit)


PRESETS: dict[str, TableMapping] = {
    # BROAD benchmark CSV (../shared/data/broad): t_s = sample index / 285.714
    "broad": TableMapping(
        time_column="t_s",
        time_unit="s",
        groups={
            "gyro": _xyz("gyr", "rad/s"),
            "accel": _xyz("acc", "m/s^2"),
            "mag": _xyz("mag", "uT"),
        },
        extra={"gt_quat": ["gt_qw", "gt_qx", "gt_qy", "gt_qz"], "movement": ["movement"]},
    ),
    # VQF test log (../shared/data/vqf/imu_data.npz): (N,3) arrays, no timestamps
    "vqf": TableMapping(
        time_column=None,
        rate_hz=285.714,
        groups={
            "gyro": _npz3("gyr", "rad/s"),
            "accel": _npz3("acc", "m/s^2"),
            "mag": _npz3("mag", "uT"),
        },
    ),
    # x-io Fusion example (../shared/data/xio/sensor_data.csv): deg/s, g, µT, jittery time
    "xio": TableMapping(
        time_column="Time (s)",
        time_unit="s",
        groups={
            "gyro": _xio3("Gyroscope", "deg/s"),
            "accel": _xio3("Accelerometer", "g"),
            "mag": _xio3("Magnetometer", "uT"),
        },
    ),
}


@dataclass
class Table:
    """A recording in SI units.

    ``t_ns``: int64[N] from the file's own timestamps (jitter kept) or ``i * 1e9/rate_hz``;
    ``groups``: name -> float64[N, 3] (gyro rad/s, accel m/s², mag µT);
    ``extra``: name -> float64[N] (one column) or float64[N, k]; ``source``: the file path.
    """

    t_ns: np.ndarray
    groups: dict[str, np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<table>"

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])

    @property
    def duration_s(self) -> float:
        return float(self.t_ns[-1] - self.t_ns[0]) / 1e9 if len(self) > 1 else 0.0

    @property
    def rate_hz(self) -> float:
        """Median sample rate (NaN for fewer than two samples)."""
        if len(self) < 2:
            return float("nan")
        return 1e9 / float(np.median(np.diff(self.t_ns)))

    def slice(self, start: int, stop: int | None = None) -> Table:
        """Rows ``start:stop`` (views, not copies)."""
        sl = slice(start, stop)
        return Table(
            t_ns=self.t_ns[sl],
            groups={k: v[sl] for k, v in self.groups.items()},
            extra={k: v[sl] for k, v in self.extra.items()},
            source=self.source,
        )


# -- public API ---------------------------------------------------------------------------
def load_mapping(path: str | Path, overrides: list[str] | None = None) -> TableMapping:
    """Load a mapping YAML file (``configs/tables/*.yaml``) through :func:`load_model`."""
    return load_model(TableMapping, path, overrides)


def detect_preset(path: str | Path) -> str | None:
    """The preset whose columns the file has (CSV header cells, NPZ array columns), or
    None; when several match, the one that reads the most columns."""
    names = set(_column_names(Path(path)))
    matches = [k for k, m in PRESETS.items() if set(m.columns()) <= names]
    return max(matches, key=lambda k: len(PRESETS[k].columns()), default=None)


def _column_names(path: Path) -> list[str]:
    """What a mapping can name in ``path``: CSV header cells; NPZ 1-D keys and ``key[i]``."""
    if not path.is_file():
        raise LogFileError(f"{path}: file not found")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                shapes = {k: z[k].shape for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise LogFileError(f"{path}: cannot read npz: {exc}") from None
        names = [k for k, sh in shapes.items() if len(sh) == 1]
        return names + [
            f"{k}[{i}]" for k, sh in shapes.items() if len(sh) == 2 for i in range(sh[1])
        ]
    try:
        with _open_text(path) as fh:
            return [h.strip() for h in next(csv.reader([fh.readline()]), [])]
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise LogFileError(f"{path}: cannot read: {exc}") from None


def load_table(
    path: str | Path, mapping: TableMapping | None = None, preset: str | None = None
) -> Table:
    """Read ``path`` (``.csv``, ``.csv.gz``, ``.npz``) with ``mapping`` or ``preset``.

    With neither, the preset is detected from the file's columns (:func:`detect_preset`)."""
    path = Path(path)
    mapping = _choose_mapping(path, mapping, preset)
    if not path.is_file():
        raise LogFileError(f"{path}: file not found")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".npz":
        cols, n = _read_npz(path, mapping)
    else:
        cols, n = _read_csv(path, mapping)
    return _assemble(path, mapping, cols, n)


def load_aedat_imu(path: str | Path) -> Table:
    """IMU samples of an AEDAT4 file (DVXplorer/DAVIS; needs the ``aedat`` package):
    accelerometer in g and gyro in deg/s, converted to SI; timestamps (µs) from 0."""
    try:
        import aedat
    except ImportError as exc:  # pragma: no cover - aedat is a listed dependency
        raise ConfigError(f"reading AEDAT4 needs the 'aedat' package ({exc})", str(path)) from None
    path = Path(path)
    if not path.is_file():
        raise LogFileError(f"{path}: file not found")
    chunks = []
    try:
        for packet in aedat.Decoder(str(path)):
            if "imus" in packet:
                chunks.append(packet["imus"])
    except (OSError, RuntimeError, ValueError) as exc:
        raise LogFileError(f"{path}: cannot decode AEDAT4: {exc}") from None
    if not chunks:
        raise LogFileError(f"{path}: no IMU packets")
    imu = np.concatenate(chunks)
    t_us = imu["t"].astype(np.int64)
    if np.any(np.diff(t_us) < 0):
        i = int(np.flatnonzero(np.diff(t_us) < 0)[0]) + 1
        raise LogFileError(f"{path}: IMU sample {i}: time goes backwards")
    gyro = np.stack([imu[f"gyroscope_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    accel = np.stack([imu[f"accelerometer_{a}"] for a in "xyz"], axis=1).astype(np.float64)
    return Table(
        t_ns=(t_us - t_us[0]) * 1000,
        groups={"gyro": gyro * UNIT_TO_SI["deg/s"], "accel": accel * UNIT_TO_SI["g"]},
        extra={"temperature_c": imu["temperature"].astype(np.float64)},
        source=str(path),
    )


# -- internals ----------------------------------------------------------------------------
def _choose_mapping(path: Path, mapping: TableMapping | None, preset: str | None) -> TableMapping:
    if mapping is not None and preset is not None:
        raise ConfigError("give a mapping or a preset, not both", str(path))
    if mapping is not None:
        return mapping
    if preset is None:
        preset = detect_preset(path)
        if preset is None:
            cols = _column_names(path)
            shown = ", ".join(repr(c) for c in cols[:12]) + (", ..." if len(cols) > 12 else "")
            raise ConfigError(
                f"its columns ({shown or 'none'}) match no known table layout: choose one with "
                f"--preset NAME (known presets: {', '.join(sorted(PRESETS))}) or describe the "
                "columns with --mapping FILE (a table mapping, see configs/tables/)",
                str(path),
            )
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown table preset '{preset}'; expected one of {sorted(PRESETS)}", "preset"
        )
    return PRESETS[preset]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by caller


def _read_csv(path: Path, mapping: TableMapping) -> tuple[dict[str, np.ndarray], int]:
    wanted = mapping.columns()
    try:
        with _open_text(path) as fh:
            header_line = fh.readline()
            header = next(csv.reader([header_line]), [])
            header = [h.strip() for h in header]
            missing = [c for c in wanted if c not in header]
            if missing:
                raise ConfigError(
                    f"column(s) {missing} not in the header; the file has {header}", f"{path}:1"
                )
            idx = [header.index(c) for c in wanted]
            body = fh.read()
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise LogFileError(f"{path}: cannot read: {exc}") from None
    if not body.strip():
        return {c: np.empty(0) for c in wanted}, 0
    try:
        data = np.loadtxt(
            io.StringIO(body), delimiter=",", usecols=idx, dtype=np.float64, ndmin=2, comments=None
        )
    except ValueError:
        data = _parse_csv_slow(path, body, header, idx)
    if data.shape[0] > 0 and data.shape[1] != len(idx):  # pragma: no cover - loadtxt guarantees
        raise LogFileError(f"{path}: unexpected column count {data.shape[1]}")
    return {c: data[:, j] for j, c in enumerate(wanted)}, int(data.shape[0])


def _parse_csv_slow(path: Path, body: str, header: list[str], idx: list[int]) -> np.ndarray:
    """Cell-by-cell parse that names the first bad cell; empty cells become NaN."""
    rows: list[list[float]] = []
    n_cols = len(header)
    for lineno, row in enumerate(csv.reader(io.StringIO(body)), start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != n_cols:
            raise LogFileError(
                f"{path}:{lineno}: row has {len(row)} cells, the header has {n_cols}"
            )
        vals = []
        for j in idx:
            cell = row[j].strip()
            if not cell:
                vals.append(math.nan)
                continue
            try:
                vals.append(float(cell))
            except ValueError:
                raise LogFileError(
                    f"{path}:{lineno}: column '{header[j]}': {cell!r} is not a number"
                ) from None
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(idx))


def _read_npz(path: Path, mapping: TableMapping) -> tuple[dict[str, np.ndarray], int]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise LogFileError(f"{path}: cannot read npz: {exc}") from None
    cols: dict[str, np.ndarray] = {}
    for name in mapping.columns():
        m = _NPZ_COL_RE.match(name)
        key, col = (m.group("key"), int(m.group("idx"))) if m else (name, None)
        if key not in arrays:
            raise ConfigError(
                f"array '{key}' not in the file; it has {sorted(arrays)}", f"{path}:{name}"
            )
        a = arrays[key]
        if col is None:
            if a.ndim != 1:
                raise ConfigError(
                    f"array '{key}' has shape {a.shape}; name a column as '{key}[i]'",
                    f"{path}:{name}",
                )
            v = a
        else:
            if a.ndim != 2 or col >= a.shape[1]:
                raise ConfigError(
                    f"array '{key}' with shape {a.shape} has no column {col}", f"{path}:{name}"
                )
            v = a[:, col]
        if not np.issubdtype(v.dtype, np.number):
            raise LogFileError(f"{path}:{name}: array is not numeric (dtype {v.dtype})")
        cols[name] = np.asarray(v, dtype=np.float64)
    lengths = {n: c.shape[0] for n, c in cols.items()}
    if len(set(lengths.values())) > 1:
        raise LogFileError(f"{path}: arrays have different lengths: {lengths}")
    n = next(iter(lengths.values())) if lengths else 0
    return cols, n


def _time_ns(path: Path, mapping: TableMapping, cols: dict[str, np.ndarray], n: int) -> np.ndarray:
    if mapping.time_column is None:
        assert mapping.rate_hz is not None
        return np.round(np.arange(n, dtype=np.float64) * (1e9 / mapping.rate_hz)).astype(np.int64)
    t = cols[mapping.time_column]
    row_base = 2 if path.suffix.lower() != ".npz" else 0
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise LogFileError(
            f"{path}:{int(bad[0]) + row_base}: column '{mapping.time_column}': time is {t[bad[0]]}"
        )
    t_ns = np.round(t * TIME_UNIT_NS[mapping.time_unit]).astype(np.int64)
    back = np.flatnonzero(np.diff(t_ns) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise LogFileError(
            f"{path}:{i + row_base}: column '{mapping.time_column}': time goes backwards "
            f"({t[i - 1]} then {t[i]} {mapping.time_unit})"
        )
    return t_ns


def _assemble(path: Path, mapping: TableMapping, cols: dict[str, np.ndarray], n: int) -> Table:
    if n == 0:
        raise LogFileError(f"{path}: the table has no data rows")
    t_ns = _time_ns(path, mapping, cols, n)
    groups = {}
    for gname, g in mapping.groups.items():
        arr = np.stack([cols[c] for c in g.columns], axis=1) * UNIT_TO_SI[g.unit]
        groups[gname] = np.ascontiguousarray(arr, dtype=np.float64)
    extra = {}
    for ename, names in mapping.extra.items():
        arr = np.stack([cols[c] for c in names], axis=1)
        extra[ename] = np.ascontiguousarray(arr[:, 0] if arr.shape[1] == 1 else arr)
    return Table(t_ns=t_ns, groups=groups, extra=extra, source=str(path))


__all__ = [
    "G0_M_S2",
    "PRESETS",
    "UNIT_TO_SI",
    "ColumnGroup",
    "Table",
    "TableMapping",
    "detect_preset",
    "load_aedat_imu",
    "load_mapping",
    "load_table",
]
