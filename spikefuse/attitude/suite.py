"""``spikefuse eval attitude DIR|FILE...``: the attitude graph scored on several logs at once,
one row per log (ratios to VQF measured in the same run) plus the median and the worst
ratio over the logs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.errors import LogFileError
from spikefuse.recording.progress import Progress
from spikefuse.tables import Table

#: file endings ``eval attitude DIR`` picks up in a folder
LOG_SUFFIXES = (".csv", ".csv.gz", ".npz")

#: (ratio field, estimate field, baseline field)
RATIOS = (
    ("incl_ratio_vs_vqf", "incl_rmse_deg", "vqf_incl_rmse_deg"),
    ("incl_ratio_vs_vqf_multirate", "incl_rmse_deg_multirate", "vqf_incl_rmse_deg_multirate"),
    ("heading_ratio_vs_vqf", "heading_rmse_deg", "vqf_heading_rmse_deg"),
    (
        "heading_ratio_vs_vqf_multirate",
        "heading_rmse_deg_multirate",
        "vqf_heading_rmse_deg_multirate",
    ),
)

#: (column title, field, format) of the per-log table
COLUMNS = (
    ("incl", "incl_rmse_deg", ".3f"),
    ("vqf", "vqf_incl_rmse_deg", ".3f"),
    ("ratio", "incl_ratio_vs_vqf", ".2f"),
    ("incl mr", "incl_rmse_deg_multirate", ".3f"),
    ("ratio mr", "incl_ratio_vs_vqf_multirate", ".2f"),
    ("head", "heading_rmse_deg", ".2f"),
    ("vqf9d", "vqf_heading_rmse_deg", ".2f"),
    ("ratio", "heading_ratio_vs_vqf", ".2f"),
    ("ops/dense", "ops_ratio_vs_dense", ".3f"),
    ("9D ops/dense", "ops_ratio_vs_dense_9d", ".3f"),
    ("rest ops/s", "rest_ops_per_s", ".1f"),
    ("9D rest ops/s", "rest_ops_per_s_9d", ".1f"),
    ("still ops/s", "rest_detected_ops_per_s", ".1f"),
    ("9D still ops/s", "rest_detected_ops_per_s_9d", ".1f"),
)


def find_logs(paths: Sequence[Path]) -> list[Path]:
    """The log files named by ``paths``: files as given, folders expanded to their
    ``.csv``/``.csv.gz``/``.npz`` files (sorted by name)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(LOG_SUFFIXES)
            )
            if not found:
                raise LogFileError(f"{p}: no {'/'.join(LOG_SUFFIXES)} log in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise LogFileError(f"{p}: file not found")
    return out


def add_ratios(fields: dict[str, Any]) -> dict[str, Any]:
    """Per-log ratios to VQF (same run), None where a side is missing."""
    for name, est, base in RATIOS:
        a, b = fields.get(est), fields.get(base)
        fields[name] = a / b if a is not None and b else None
    return fields


def _stat(values: list[float | None], fn: Callable[[np.ndarray], float]) -> float | None:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return float(fn(v)) if v.size else None


@dataclass
class SuiteReport:
    """Per-log fields plus the summary over the logs."""

    trials: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    """logs that could not be read or scored: ``{"log", "error"}`` (the others are scored)"""

    @property
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_logs": len(self.trials)}
        for name, _, _ in RATIOS:
            vals = [t.get(name) for t in self.trials]
            stem = name.replace("_ratio_vs_vqf", "")
            out[f"median_{stem}_ratio_vs_vqf"] = _stat(vals, np.median)
            out[f"worst_{stem}_ratio_vs_vqf"] = _stat(vals, np.max)
        for key in ("ops_ratio_vs_dense", "ops_ratio_vs_dense_9d"):
            out[f"worst_{key}"] = _stat([t.get(key) for t in self.trials], np.max)
        for key in (
            "rest_ops_per_s",
            "rest_ops_per_s_9d",
            "rest_detected_ops_per_s",
            "rest_detected_ops_per_s_9d",
        ):
            out[f"worst_{key}"] = _stat([t.get(key) for t in self.trials], np.nanmax)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"trials": self.trials, "failed": self.failed, **self.summary}

    def render(self) -> str:
        head = ("log",) + tuple(c[0] for c in COLUMNS)
        rows = [head]
        for t in self.trials:
            rows.append(
                (Path(t["log"]).name,) + tuple(_fmt(t.get(f), fmt) for _, f, fmt in COLUMNS)
            )
        s = self.summary
        for kind in ("median", "worst"):
            cells = []
            for _, f, fmt in COLUMNS:
                stem = f.replace("_ratio_vs_vqf", "")
                key = f"{kind}_{stem}_ratio_vs_vqf" if "ratio_vs_vqf" in f else f"{kind}_{f}"
                cells.append(_fmt(s.get(key), fmt))
            rows.append((kind,) + tuple(cells))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.insert(len(rows), "  ".join("-" * w for w in widths))
        failed = "".join(f"not scored: {f['error']}\n" for f in self.failed)
        return (
            "\n".join(lines)
            + "\nincl/head: RMSE [deg]; mr: multi-rate (accel 50 Hz); ratios to VQF in the same "
            "run (heading: VQF 9D); ops/dense: syn ops over the same graph run densely\n" + failed
        )


def _fmt(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, fmt)


def evaluate_logs(
    logs: Sequence[Path],
    load: Callable[[Path], Table],
    score: Callable[[Table], dict[str, Any]],
    progress: bool | None = None,
) -> SuiteReport:
    """``score(load(log))`` for every log, with a progress bar on a terminal. A log that
    cannot be read (:class:`LogFileError`, naming the file and what is wrong) is listed in
    ``failed`` and the others are still scored."""
    rep = SuiteReport()
    with Progress(len(logs), "eval attitude", enabled=progress) as bar:
        for log in logs:
            try:
                table = load(log)
            except LogFileError as exc:
                rep.failed.append({"log": str(log), "error": str(exc)})
            else:
                rep.trials.append(add_ratios(score(table)))
            bar.update(1)
    return rep


__all__ = ["SuiteReport", "add_ratios", "evaluate_logs", "find_logs"]
