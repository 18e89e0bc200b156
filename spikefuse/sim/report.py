"""The end-of-run report of a simulated run: task figures (lap, lap time, cross-track RMS,
collisions), sensor -> wheel latency per sensor, events/s per sensor against its raw
sample rate, engine ops against the same graph run densely at the gyro rate and at the
camera rate, and the picture ``sim_run.png`` (trajectory on the track, events/s per
sensor over time, latency histograms).

Engine figures come from the core's own ``status/core`` messages (``totals.syn_ops``,
``inputs.<name>.n_events``, ``uptime_s``): the ops over the run are the difference between
the first status after the world started and the last one after it stopped, and the dense
baselines are :class:`~spikefuse.engine.dense.DenseExecutor`'s ``ops_per_step`` times the
rate times the same span of core time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikefuse.core.stats import EDGES_US
from spikefuse.errors import ConfigError

SENSORS = ("gyro", "accel", "wheels", "camera")


@dataclass
class CoreSample:
    uptime_s: float
    syn_ops: int
    n_events: dict[str, int]


@dataclass
class RunReport:
    """Collected during the run by the sim driver; summarised at its end."""

    graph_path: Path | None
    rates_hz: dict[str, float]
    trajectory: list[tuple[float, float, float, float]] = field(default_factory=list)
    """(sim_t_s, x_m, y_m, cross_track_m)"""
    track_xy: list[list[float]] = field(default_factory=list)
    core: list[CoreSample] = field(default_factory=list)
    camera_pixels: int = 64 * 48
    n_bad_core_status: int = 0
    started: int | None = None
    """index in ``core`` of the first status after the world started"""

    def add_truth(self, t_s: float, x: float, y: float, cross: float) -> None:
        self.trajectory.append((t_s, x, y, cross))

    def add_core_status(self, metrics: dict) -> None:
        totals = metrics.get("totals") or {}
        inputs = metrics.get("inputs") or {}
        try:
            sample = CoreSample(
                float(metrics.get("uptime_s", 0.0)),
                int(totals.get("syn_ops", 0)),
                {k: int(v.get("n_events", 0)) for k, v in inputs.items() if isinstance(v, dict)},
            )
        except (TypeError, ValueError, AttributeError):
            self.n_bad_core_status += 1  # not a core status of the expected form
            return
        self.core.append(sample)

    def mark_start(self) -> None:
        self.started = len(self.core)

    # ---------------------------------------------------------------- figures
    def dense_ops_per_step(self) -> int | None:
        if self.graph_path is None:
            return None
        from spikefuse.engine.dense import DenseExecutor
        from spikefuse.graph import Graph

        try:
            return int(DenseExecutor(Graph.load(self.graph_path)).ops_per_step)
        except ConfigError:
            return None

    def engine_span(self) -> tuple[CoreSample, CoreSample] | None:
        first = self.core[(self.started or 1) - 1] if self.core else None
        if first is None or len(self.core) < 2:
            return None
        last = self.core[-1]
        return (first, last) if last.uptime_s > first.uptime_s else None

    def figures(self, loop: dict) -> dict:
        out: dict = {
            "lap_completed": loop.get("lap_time_s") is not None,
            "lap_time_s": loop.get("lap_time_s"),
            "cross_track_rms_m": loop.get("cross_track_rms_m"),
            "collisions": loop.get("collisions"),
        }
        lat = loop.get("latency_us") or {}
        out["latency_us"] = {g: lat.get(g, {}) for g in SENSORS}
        span = self.engine_span()
        dense = self.dense_ops_per_step()
        out["events_per_s"] = {}
        if span is not None:
            a, b = span
            dt = b.uptime_s - a.uptime_s
            ops = b.syn_ops - a.syn_ops
            out["engine_ops"] = ops
            out["engine_span_s"] = round(dt, 3)
            for g in SENSORS:
                n = b.n_events.get(g, 0) - a.n_events.get(g, 0)
                out["events_per_s"][g] = round(n / dt, 2)
            if dense:
                for key, g in (("gyro", "gyro"), ("camera", "camera")):
                    dense_ops = dense * self.rates_hz[g] * dt
                    out[f"ops_ratio_vs_dense_at_{key}_rate"] = round(ops / dense_ops, 6)
        out["dense_ops_per_step"] = dense
        return out

    def summary_text(self, loop: dict) -> str:
        f = self.figures(loop)
        lines = ["sim summary:"]
        lap = f"yes, {f['lap_time_s']:.2f} s" if f["lap_completed"] else "no"
        lines.append(
            f"  task: lap completed {lap}; cross-track RMS {_num(f['cross_track_rms_m'], 4)} m; "
            f"collisions {f['collisions']}"
        )
        lines.append(
            "  sensor   raw rate   events/s  ratio   sample sent -> set-point back p50 / p99 (us)"
        )
        for g in SENSORS:
            rate = self.rates_hz.get(g, 0.0)
            raw = rate * (self.n_channels(g))
            ev = f["events_per_s"].get(g)
            ratio = f"{ev / raw:.3f}" if ev is not None and raw else "-"
            lat = f["latency_us"].get(g) or {}
            lat_text = "- (caused no command)"
            if lat.get("n"):
                lat_text = f"{lat['p50_us']:.0f} / {lat['p99_us']:.0f} (n={lat['n']})"
            lines.append(f"  {g:<8} {raw:>8.0f}/s {_num(ev, 1):>10} {ratio:>6}   {lat_text}")
        for key in ("gyro", "camera"):
            r = f.get(f"ops_ratio_vs_dense_at_{key}_rate")
            lines.append(
                f"  engine ops vs the graph run densely at the {key} rate "
                f"({self.rates_hz[key]:g} Hz): {_num(r, 4)}"
            )
        if self.n_bad_core_status:
            lines.append(
                f"  ({self.n_bad_core_status} core status messages of another form skipped)"
            )
        return "\n".join(lines)

    def n_channels(self, g: str) -> int:
        return {"gyro": 3, "accel": 3, "wheels": 2}.get(g, self.camera_pixels)

    # ---------------------------------------------------------------- picture
    def write_png(self, path: Path, loop: dict) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 5))
        ax = axes[0]
        if self.track_xy:
            t = np.array(self.track_xy + self.track_xy[:1])
            ax.plot(t[:, 0], t[:, 1], color="0.6", lw=8, alpha=0.5, label="track")
        if self.trajectory:
            tr = np.array(self.trajectory)
            sc = ax.scatter(tr[:, 1], tr[:, 2], c=tr[:, 0], s=2, cmap="viridis", zorder=3)
            fig.colorbar(sc, ax=ax, label="sim time (s)")
        ax.set_aspect("equal")
        ax.set_title(f"trajectory (cross-track RMS {_num(loop.get('cross_track_rms_m'), 4)} m)")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax = axes[1]
        for g in SENSORS:
            t, r = self.events_series(g)
            if t.size:
                ax.plot(t, r, label=f"{g} (raw {self.rates_hz[g] * self.n_channels(g):.0f}/s)")
        ax.set_yscale("symlog")
        ax.set_xlabel("core uptime (s)")
        ax.set_ylabel("events/s")
        ax.set_title("events per sensor")
        ax.legend(fontsize=8)
        ax = axes[2]
        hist = loop.get("latency_hist") or {}
        centers = np.concatenate([[0.5], EDGES_US])
        for g in SENSORS:
            h = np.asarray(hist.get(g, []), float)
            if h.size and h.sum():
                ax.step(centers[: h.size], h, where="post", label=g)
        ax.set_xscale("log")
        ax.set_xlabel("sample sent -> wheel set-point back (us)")
        ax.set_ylabel("count")
        ax.set_title("latency")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    def events_series(self, g: str) -> tuple[np.ndarray, np.ndarray]:
        if len(self.core) < 2:
            return np.empty(0), np.empty(0)
        t = np.array([c.uptime_s for c in self.core])
        n = np.array([c.n_events.get(g, 0) for c in self.core], float)
        dt = np.diff(t)
        ok = dt > 0
        return t[1:][ok], (np.diff(n)[ok] / dt[ok])


def _num(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"
