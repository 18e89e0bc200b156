"""``spikefuse train CONFIG.yaml``: train a network on MCAP recordings and convert it to a
sigma-delta graph (``Graph.save`` file, JSON report, error/ops curve). Needs
``pip install 'spikefuse[train]'``. Config errors name file:line and exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a controller from recordings into a sigma-delta graph")
    p.add_argument("config", type=Path, help="training config (YAML, docs/training.md)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. fit.epochs=5 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--collect",
        action="store_true",
        help="first record the config's collect section (in-process sim runs, DAgger rounds)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.train.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    import jax  # noqa: F401  (the extra: a clear message before any work if it is missing)

    from spikefuse.train.run import run_training

    rep = run_training(cfg, progress=False if args.no_progress else None, collect=args.collect)
    p = rep["picked"]
    ratios = ", ".join(f"{k} {v:.4f}" for k, v in p["ops_ratio_vs_dense"].items())
    print(
        f"graph {rep['graph']}\n"
        f"float val loss {rep['float_val_loss']:.4f}; converted (lambda {rep['lambda']:g}) "
        f"val error {p['error']:.4f}\n"
        f"ops vs dense: {ratios}\n"
        f"engine = rounding network: {rep['engine_check']['bit_exact']} "
        f"({rep['engine_check']['n_values']} values)\n"
        f"train {rep['train_seconds']:.1f} s; report {cfg.resolve_path(cfg.output.report)}"
    )
    return 0
