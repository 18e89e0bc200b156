"""``spikefuse train CONFIG --collect``: the ``collect`` section's recordings of the
simulated robot, made in-process (:mod:`spikefuse.train.closedloop`), seeded, optionally
in parallel worker processes (each run depends only on its own settings, so the files are
the same whatever the number of workers). No JAX here."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from spikefuse.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One recording: its file, the driver config and overrides, the perturbation."""

    path: str
    driver_config: str
    overrides: tuple[str, ...]
    yaw_rate_std_radps: float
    tau_s: float
    delay_ms: float
    max_s: float


def jobs(cfg: TrainConfig) -> list[Job]:
    """The teacher runs of the ``collect`` section (train, then validation seeds).
    Renderer, disturbance and delay cycle over their lists by run index."""
    c = cfg.collect
    assert c is not None
    runs = [(p, s) for p, s in zip(cfg.collected("train"), c.train_seeds, strict=True)]
    runs += [(p, s) for p, s in zip(cfg.collected("validation"), c.validation_seeds, strict=True)]
    out = []
    for i, (path, seed) in enumerate(runs):
        sets = (
            *c.set,
            f"world.seed={seed}",
            f"world.renderer={c.renderers[i % len(c.renderers)]}",
        )
        out.append(
            Job(
                str(path),
                str(cfg.resolve_path(c.driver_config)),
                sets,
                c.yaw_rate_std_radps[i % len(c.yaw_rate_std_radps)],
                c.tau_s,
                c.delay_ms[i % len(c.delay_ms)],
                c.max_s,
            )
        )
    return out


def record(job: Job) -> dict:
    """Record one job (in a worker process): written to a temporary name, then renamed,
    so an interrupted collection never leaves a complete-looking file."""
    from spikefuse.train.closedloop import Perturbation, record_run, sim_driver_config

    t0 = time.monotonic()
    cfg = sim_driver_config(job.driver_config, list(job.overrides))
    path = Path(job.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".mcap.part")
    tmp.unlink(missing_ok=True)
    pert = Perturbation(job.yaw_rate_std_radps, job.tau_s)
    res = record_run(tmp, cfg, delay_ms=job.delay_ms, perturbation=pert, max_s=job.max_s)
    tmp.replace(path)
    return {"path": job.path, "wall_s": round(time.monotonic() - t0, 2), **res}


def run_jobs(job_list: list[Job], workers: int) -> list[dict]:
    if workers <= 1 or len(job_list) <= 1:
        results = [record(j) for j in job_list]
    else:
        # spawn: the parent has imported JAX (threads), which fork must not copy
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(record, job_list))
    for r in results:
        log.info(
            "recorded %s: lap %s, cross-track %.4f m, %.1f s",
            r["path"],
            r["lap_completed"],
            r["cross_track_rms_m"],
            r["wall_s"],
        )
    return results


__all__ = ["Job", "jobs", "record", "run_jobs"]
