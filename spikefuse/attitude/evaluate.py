"""``spikefuse eval attitude``: score the event-driven attitude graph on a recorded log and
compare it, in the same run, with the same graph executed frame by frame, VQF (6D) and
plain gyro integration, at full rate and multi-rate (accelerometer 50 Hz, mag 20 Hz).

Scoring follows the BROAD convention (``../shared/data/README.md``): samples with
``movement == 1`` and a valid ground-truth quaternion; inclination error
``2 acos(sqrt(w^2 + z^2))`` of ``q ⊗ q_gt⁻¹``. Logs without ground truth are scored
against VQF instead (``*_vs_vqf`` fields), logs without ``movement`` use every sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikefuse.attitude.generate import AttitudeParams, build_attitude_graph
from spikefuse.attitude.quat import inclination_error_rad, quat_from_up
from spikefuse.attitude.run import (
    Stream,
    decimate,
    hold_nonfinite,
    run_dense,
    run_events,
    run_gyro_only,
    run_vqf,
)
from spikefuse.attitude.status import InputFlags, check_inputs, trust_summary
from spikefuse.errors import LogFileError
from spikefuse.graph import Graph
from spikefuse.tables import Table

MULTIRATE_ACCEL_HZ = 50.0
MULTIRATE_MAG_HZ = 20.0


@dataclass
class AttitudeReport:
    """Result of :func:`evaluate_attitude`; ``fields`` is the JSON of ``spikefuse eval``."""

    fields: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, Any, Any, Any]] = field(default_factory=list)

    def render(self) -> str:
        head = ("estimator", "incl RMSE [deg]", "ops/s of signal", "note")
        table = [head] + [
            tuple("-" if c is None else (f"{c:.4g}" if isinstance(c, float) else str(c)) for c in r)
            for r in self.rows
        ]
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        flags = self.fields.get("flags") or []
        lines.append("flags: " + (", ".join(flags) if flags else "none"))
        return "\n".join(lines) + "\n"


def _rmse_deg(err_rad: np.ndarray) -> float:
    if err_rad.size == 0:
        return float("nan")
    return float(np.degrees(np.sqrt(np.mean(err_rad**2))))


def _scored_mask(table: Table) -> tuple[np.ndarray, np.ndarray | None]:
    """(mask of scored samples, ground truth or None)."""
    n = len(table)
    mask = np.ones(n, dtype=bool)
    mv = table.extra.get("movement")
    if mv is not None:
        mask &= np.asarray(mv) == 1
    gt = table.extra.get("gt_quat")
    if gt is not None:
        gt = np.asarray(gt, dtype=np.float64)
        if gt.ndim != 2 or gt.shape[1] != 4:
            raise LogFileError(
                f"{table.source}: gt_quat must have 4 columns, found shape {gt.shape}"
            )
        mask &= np.all(np.isfinite(gt), axis=1)
    return mask, gt


def _streams(
    table: Table,
    accel_hz: float | None,
    mag_hz: float | None,
    use_mag: bool,
    gyro: np.ndarray,
    accel: np.ndarray,
    mag: np.ndarray | None,
) -> dict[str, Stream]:
    st = {
        "gyro": Stream(gyro, decimate(table.t_ns, None)),
        "accel": Stream(accel, decimate(table.t_ns, accel_hz)),
    }
    if use_mag and mag is not None:
        st["mag"] = Stream(mag, decimate(table.t_ns, mag_hz))
    return st


def evaluate_attitude(
    table: Table,
    params: AttitudeParams | None = None,
    graph: Graph | None = None,
    compare: bool = True,
) -> AttitudeReport:
    """Run every estimator on ``table`` and score it (see module docstring)."""
    if "gyro" not in table.groups or "accel" not in table.groups:
        raise LogFileError(
            f"{table.source}: attitude needs 'gyro' and 'accel' groups, found {sorted(table.groups)}"
        )
    if len(table) < 2:
        raise LogFileError(f"{table.source}: need at least two samples")
    rate_hz = table.rate_hz
    p = params or AttitudeParams(rate_hz=rate_hz)
    flags_in: InputFlags = check_inputs(table.groups["gyro"], table.groups["accel"])
    gyro, _ = hold_nonfinite(table.groups["gyro"])
    accel, _ = hold_nonfinite(table.groups["accel"], fallback=np.array([0.0, 0.0, 9.80665]))
    if graph is None:
        # start from the first accelerometer direction, as a daemon (and VQF) would
        a0 = (
            accel[0] / np.linalg.norm(accel[0])
            if np.linalg.norm(accel[0]) > 0.5
            else np.array([0.0, 0.0, 1.0])
        )
        p = p.model_copy(update={"up0": tuple(float(v) for v in a0)})
    g = graph or build_attitude_graph(p)
    use_mag = "mag" in g.nodes
    mag = hold_nonfinite(table.groups["mag"])[0] if (use_mag and "mag" in table.groups) else None
    duration_s = max(table.duration_s, 1e-9)
    mask, gt = _scored_mask(table)
    t_ns = table.t_ns
    out: dict[str, Any] = {
        "log": table.source,
        "n_samples": len(table),
        "duration_s": duration_s,
        "rate_hz": rate_hz,
        "n_scored": int(mask.sum()),
        "ground_truth": gt is not None,
    }

    t0 = time.perf_counter()
    ev = run_events(g, t_ns, _streams(table, None, None, use_mag, gyro, accel, mag))
    out["event_wall_s"] = time.perf_counter() - t0
    up_ev = ev.outputs["gravity"]
    q_ev = quat_from_up(up_ev)
    ops = ev.syn_ops[-1] / duration_s
    mv = table.extra.get("movement")
    rest = (np.asarray(mv) == 0) if mv is not None else _still_mask(gyro, accel)
    d_ops = np.diff(ev.syn_ops, prepend=0)
    n_rest = int(rest[1:].sum())
    rest_ops = float(d_ops[1:][rest[1:]].sum() / (n_rest / rate_hz)) if n_rest else float("nan")
    ev_mr = run_events(
        g, t_ns, _streams(table, MULTIRATE_ACCEL_HZ, MULTIRATE_MAG_HZ, use_mag, gyro, accel, mag)
    )
    q_mr = quat_from_up(ev_mr.outputs["gravity"])

    results: dict[str, np.ndarray] = {"event": q_ev, "event_multirate": q_mr}
    out.update(
        {
            "ops_per_s": ops,
            "ops_per_s_multirate": ev_mr.syn_ops[-1] / duration_s,
            "rest_ops_per_s": rest_ops,
            "events_in_per_s": ev.n_events_in / duration_s,
            "spikes_in_per_s": ev.n_spikes_in / duration_s,
        }
    )
    if compare:
        t0 = time.perf_counter()
        dense_out, dense_ops = run_dense(
            g, t_ns, _streams(table, None, None, use_mag, gyro, accel, mag), ["gravity"]
        )
        out["dense_wall_s"] = time.perf_counter() - t0
        results["dense"] = quat_from_up(dense_out["gravity"])
        out["dense_ops_per_s"] = dense_ops / duration_s
        out["ops_ratio_vs_dense"] = ops / out["dense_ops_per_s"]
        results["vqf"] = run_vqf(t_ns, gyro, accel)
        results["vqf_multirate"] = run_vqf(t_ns, gyro, accel, decimate(t_ns, MULTIRATE_ACCEL_HZ))
        out["vqf_updates_per_s"] = 2.0 * rate_hz
        out["vqf_updates_per_s_multirate"] = rate_hz + MULTIRATE_ACCEL_HZ
        results["gyro_only"] = run_gyro_only(t_ns, gyro, accel[0])
    _score(out, results, mask, gt)
    trust = ev.outputs.get("accel_trust")
    out.update(trust_summary(trust[:, 0] if trust is not None else None, up_ev))
    flags = list(flags_in.flags())
    if out.get("accel_untrusted_frac", 0.0) > 0.5:
        flags.append("accel_untrusted")
    if out.get("gravity_norm_max_dev", 0.0) > 0.2:
        flags.append("gravity_norm_off")
    out["input_flags"] = flags_in.as_dict()
    out["flags"] = flags
    out["degraded"] = bool(flags)
    report = AttitudeReport(fields=out)
    _rows(report, out)
    return report


def _score(
    out: dict[str, Any], results: dict[str, np.ndarray], mask: np.ndarray, gt: np.ndarray | None
) -> None:
    names = {
        "event": "incl_rmse_deg",
        "event_multirate": "incl_rmse_deg_multirate",
        "dense": "dense_incl_rmse_deg",
        "vqf": "vqf_incl_rmse_deg",
        "vqf_multirate": "vqf_incl_rmse_deg_multirate",
        "gyro_only": "gyro_only_incl_rmse_deg",
    }
    for key, q in results.items():
        if gt is not None:
            out[names[key]] = _rmse_deg(inclination_error_rad(q[mask], gt[mask]))
        else:
            out[names[key]] = None
        if "vqf" in results and key != "vqf":
            # agreement with VQF (no ground truth needed): samples after min(5 s, 1/4) settling
            settle_s = min(5.0, out["duration_s"] / 4.0)
            settle = np.arange(q.shape[0]) >= int(settle_s * out["rate_hz"])
            out[names[key].replace("incl_rmse_deg", "incl_rmse_vs_vqf_deg")] = _rmse_deg(
                inclination_error_rad(q[settle], results["vqf"][settle])
            )


def _still_mask(gyro: np.ndarray, accel: np.ndarray) -> np.ndarray:
    """Samples where the IMU is still: |w| < 0.02 rad/s and |a| within 2 % of g0."""
    return (np.linalg.norm(gyro, axis=1) < 0.02) & (
        np.abs(np.linalg.norm(accel, axis=1) / 9.80665 - 1) < 0.02
    )


def _rows(report: AttitudeReport, f: dict[str, Any]) -> None:
    report.rows.append(
        ("spikefuse events, full rate", f.get("incl_rmse_deg"), f.get("ops_per_s"), "syn ops")
    )
    report.rows.append(
        (
            "spikefuse events, multi-rate",
            f.get("incl_rmse_deg_multirate"),
            f.get("ops_per_s_multirate"),
            f"accel {MULTIRATE_ACCEL_HZ:g} Hz",
        )
    )
    if "dense_ops_per_s" in f:
        report.rows.append(
            (
                "same graph, dense per sample",
                f.get("dense_incl_rmse_deg"),
                f.get("dense_ops_per_s"),
                f"ratio {f['ops_ratio_vs_dense']:.3f}",
            )
        )
        report.rows.append(
            ("vqf 6D", f.get("vqf_incl_rmse_deg"), f.get("vqf_updates_per_s"), "updates/s")
        )
        report.rows.append(
            (
                "vqf 6D, multi-rate",
                f.get("vqf_incl_rmse_deg_multirate"),
                f.get("vqf_updates_per_s_multirate"),
                "updates/s",
            )
        )
        report.rows.append(("gyro only", f.get("gyro_only_incl_rmse_deg"), None, ""))
    report.rows.append(("events at rest", None, f.get("rest_ops_per_s"), "syn ops/s, still phases"))
    if not f.get("ground_truth"):
        report.rows.append(
            ("events vs vqf (no ground truth)", f.get("incl_rmse_vs_vqf_deg"), None, "agreement")
        )


__all__ = ["AttitudeReport", "evaluate_attitude", "MULTIRATE_ACCEL_HZ", "MULTIRATE_MAG_HZ"]
