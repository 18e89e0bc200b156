"""``spikefuse train``: load recordings, fit the float network, search the sigma-delta
scales over the configured lambdas, save the picked graph, the JSON report and the
error/ops curve."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from spikefuse.errors import ConfigError
from spikefuse.train.config import TrainConfig
from spikefuse.train.dataset import Recording, load_recording


def load_split(cfg: TrainConfig) -> tuple[list[Recording], list[Recording], dict[str, float]]:
    # every configured input is read (and becomes a graph input), used by the network or
    # not; only the inputs the network reads make samples
    sizes = {name: spec.n for name, spec in cfg.inputs.items()}
    net = cfg.network
    sampled = {*([net.image_input] if net.image_input else []), *net.vector_inputs}
    sets = []
    for which in ("train", "validation"):
        recs = [
            load_recording(p, sizes, cfg.target.topic, sampled=sampled)
            for p in cfg.recordings(which)
        ]
        for r in recs:
            if r.n < 2:
                raise ConfigError(f"{r.path}: fewer than 2 samples after the first command", which)
        sets.append(recs)
    scales: dict[str, float] = {}
    n_out = {r.target.shape[1] for rs in sets for r in rs}
    if len(n_out) != 1:
        raise ConfigError(f"the target has different sizes across recordings: {n_out}", "target")
    for r in sets[0] + sets[1]:
        for name, scale in r.scales.items():
            if scales.setdefault(name, scale) != scale:
                raise ConfigError(
                    f"{r.path}: input '{name}' has scale {scale}, others {scales[name]}",
                    f"inputs.{name}",
                )
    return sets[0], sets[1], scales


def _fit_and_convert(cfg: TrainConfig, lambdas, progress):
    """Fit on the training recordings, then search the scales for each lambda: (trainer,
    curve, picked scales)."""
    from spikefuse.train.fit import Trainer
    from spikefuse.train.network import Architecture

    train, val, scales = load_split(cfg)
    arch = Architecture(cfg, train[0].target.shape[1])
    tr = Trainer(cfg, arch, train, val, scales)
    tr.fit(progress)
    scales0 = tr.init_scales()
    curve, picked = [], None
    for lam in sorted(lambdas):
        scales = tr.search_scales(lam, scales0)
        row = {"lambda": lam, **tr.evaluate(scales, val), "scales": scales.tolist()}
        curve.append(row)
        if lam == cfg.convert.pick:
            picked = scales
    return tr, curve, picked


def _save_graph(cfg: TrainConfig, tr, scales) -> Path:
    graph_path = cfg.resolve_path(cfg.output.graph)
    graph = tr.graph(scales)
    graph.name = graph_path.stem
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    graph.save(graph_path)
    return graph_path


def run_training(cfg: TrainConfig, progress: bool | None = None, collect: bool = False) -> dict:
    """Everything ``spikefuse train`` does; returns the report (also written to disk).
    ``collect``: first record the config's ``collect`` runs."""
    from spikefuse.train.verify import verify

    t0 = time.monotonic()
    collected: dict = {}
    if collect:
        if cfg.collect is None:
            raise ConfigError("--collect needs a collect section in the config", "collect")
        from spikefuse.train.collect import jobs, run_jobs

        runs = run_jobs(jobs(cfg), cfg.collect.workers)
        collected = {"collected_runs": runs, "collect_seconds": time.monotonic() - t0}
    t1 = time.monotonic()
    tr, curve, scales = _fit_and_convert(cfg, cfg.convert.lambdas, progress)
    t_fit = tr.fit_seconds
    row = next(c for c in curve if c["lambda"] == cfg.convert.pick)
    graph_path = _save_graph(cfg, tr, scales)
    graph = tr.graph(scales)
    checks = [verify(tr, graph, scales, r) for r in tr.val]
    report_path = cfg.resolve_path(cfg.output.report)

    def rel(path: str | Path) -> str:  # a shipped report names no machine's folders
        return os.path.relpath(path, report_path.parent)

    if collected:
        collected["collected_runs"] = [{**r, "path": rel(r["path"])} for r in runs]
    report = {
        "graph": rel(graph_path),
        "train_recordings": [rel(r.path) for r in tr.train],
        "validation_recordings": [rel(r.path) for r in tr.val],
        "n_train_samples": tr.train_set.n,
        "n_validation_samples": tr.val_set.n,
        "fit_seconds": t_fit,
        "train_seconds": time.monotonic() - t1,
        **collected,
        "total_seconds": time.monotonic() - t0,
        "history": tr.history,
        "float_val_loss": tr.best_val_loss,
        "best_epoch": tr.best_epoch,
        "dense_ops_per_step": tr.ops_model.dense_ops_per_step,
        "dense_baseline_rate_hz": tr.dense_rate_hz,
        "lambda": cfg.convert.pick,
        "picked": row,
        "curve": curve,
        "engine_check": {
            "bit_exact": all(c.bit_exact for c in checks),
            "n_samples": sum(c.n_samples for c in checks),
            "n_values": sum(c.n_values for c in checks),
            "n_mismatched": sum(c.n_mismatched for c in checks),
            "engine_ops": sum(c.engine_ops for c in checks),
            "rounding_ops": sum(c.rounding_ops for c in checks),
        },
        "seed": cfg.fit.seed,
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1))
    if cfg.output.curve_png:
        plot_curve(curve, cfg.convert.pick, cfg.resolve_path(cfg.output.curve_png))
    return report


def plot_curve(curve: list[dict], pick: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ratio = [c["ops_ratio_vs_dense"]["baseline"] for c in curve]
    err = [c["error"] for c in curve]
    ax.plot(ratio, err, "o-")
    for c, x, y in zip(curve, ratio, err, strict=True):
        ax.annotate(f"λ={c['lambda']:g}" + (" (picked)" if c["lambda"] == pick else ""), (x, y))
    ax.set_xlabel("ops / dense ops at the baseline rate")
    ax.set_ylabel("validation error (normalised MSE)")
    ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
