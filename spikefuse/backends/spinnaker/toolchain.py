"""The sPyNNaker toolchain, kept inside the backend's own folder.

sPyNNaker reads its user config from ``~/.spynnaker.cfg`` (or the XDG config dirs) and
writes one there if none exists. The backend writes its cfg into its own work folder and
points ``HOME`` and ``XDG_CONFIG_HOME`` there (in a child's environment, or, in the daemon,
only while the toolchain sets up): the user's home is never read or written.

``python -m spikefuse.backends.spinnaker.toolchain GRAPH.npz WORK_DIR`` maps a graph on a
virtual board in a fresh process and prints a JSON :class:`MappingReport`; tests and the
benchmark run it with a timeout (the toolchain's threads can outlive a failed run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.backends.spinnaker.config import SpinnakerConfig
from spikefuse.backends.spinnaker.plan import NetworkPlan, compile_model, hops_latency_us
from spikefuse.errors import EngineError

CFG_NAME = ".spynnaker.cfg"


class BackendError(EngineError):
    """The SpiNNaker backend cannot run (no board, toolchain failure, timeout)."""


def cfg_text(cfg: SpinnakerConfig, work_dir: Path) -> str:
    """The toolchain's user cfg for ``cfg`` (reports under ``work_dir``)."""
    lines = ["[Machine]", f"version = {cfg.version}"]
    if cfg.virtual_board:
        lines.append("virtual_board = True")
    elif cfg.machine_host is not None:
        lines.append(f"machine_name = {cfg.machine_host}")
    else:
        lines.append(f"spalloc_server = {cfg.spalloc_server}")
        if cfg.spalloc_user:
            lines.append(f"spalloc_user = {cfg.spalloc_user}")
        if cfg.spalloc_machine:
            lines.append(f"spalloc_machine = {cfg.spalloc_machine}")
    lines += [
        f"time_scale_factor = {cfg.time_scale_factor}",
        "",
        "[Reports]",
        f"default_report_file_path = {work_dir}",
        "max_reports_kept = 3",
        "",
        "[Mode]",
        "mode = Production",
        "",
    ]
    return "\n".join(lines)


def prepare(cfg: SpinnakerConfig, work_dir: Path) -> dict[str, str]:
    """Write the cfg into ``work_dir``; return the environment the toolchain needs."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / CFG_NAME).write_text(cfg_text(cfg, work_dir), encoding="utf-8")
    (work_dir / "xdg").mkdir(exist_ok=True)
    return {"HOME": str(work_dir), "XDG_CONFIG_HOME": str(work_dir / "xdg")}


@contextmanager
def toolchain_env(env: dict[str, str]) -> Iterator[None]:
    """Point the toolchain at the backend's folder while it reads its config (in-process:
    the daemon). Restored on exit."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class NodeReport:
    name: str
    kind: str
    size: int
    n_synapses: int
    max_step_quanta: float
    weight_quantisation_rmse: float | None  # in thresholds (= quanta of the node)
    weight_quantisation_max: float | None
    latency_us: float
    approximation: str = ""


@dataclass
class MappingReport:
    graph: str
    mapped_ok: bool
    n_cores: int  # cores running the graph's populations (+ the live I/O gatherer)
    n_chips: int  # chips holding them
    n_cores_total: int  # including the toolchain's monitor cores (one per chip)
    n_neurons: int
    n_synapses: int
    timestep_us: float
    map_s: float
    nodes: list[NodeReport] = field(default_factory=list)
    error: str = ""

    @property
    def weight_quantisation_rmse(self) -> float:
        """Over every synapse of the graph, in thresholds (NaN if not read back)."""
        read = [n for n in self.nodes if n.weight_quantisation_rmse is not None and n.n_synapses]
        if not read:
            return float("nan")
        sq = sum(n.n_synapses * n.weight_quantisation_rmse**2 for n in read)
        return float(np.sqrt(sq / sum(n.n_synapses for n in read)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MappingReport:
        d = json.loads(text)
        d["nodes"] = [NodeReport(**n) for n in d["nodes"]]
        return cls(**d)

    def table(self) -> str:
        rows = [
            f"{self.graph}: {self.n_cores} cores on {self.n_chips} chips "
            f"({self.n_cores_total} with monitors), {self.n_neurons} neurons, "
            f"{self.n_synapses} synapses, mapped in {self.map_s:.1f} s"
        ]
        for n in self.nodes:
            q = "-" if n.weight_quantisation_rmse is None else f"{n.weight_quantisation_rmse:.3g}"
            rows.append(
                f"  {n.name:<14} {n.kind:<10} x{n.size:<5} synapses {n.n_synapses:<8} "
                f"w-quant rmse {q:<9} latency {n.latency_us:.0f} us {n.approximation}"
            )
        return "\n".join(rows)


def build_and_map(
    sim: Any, plan: NetworkPlan, cfg: SpinnakerConfig, live: bool, notify_port: int | None = None
):
    """``sim.setup`` and the network (mapping happens at the first ``sim.run``). Returns
    the :class:`~.pynn.Network`."""
    from spikefuse.backends.spinnaker.pynn import build_network

    sim.setup(timestep=cfg.timestep_ms, time_scale_factor=cfg.time_scale_factor)
    for cell in (sim.IF_curr_delta, sim.IF_curr_exp):
        sim.set_number_of_neurons_per_core(cell, cfg.neurons_per_core)
    return build_network(sim, plan, cfg.timestep_ms, live=live, notify_port=notify_port)


def placement_counts(plan: NetworkPlan) -> tuple[int, int, int]:
    """(cores of the graph's populations + live I/O, their chips, all cores used)."""
    from spinn_front_end_common.data import FecDataView

    placements = list(FecDataView.iterate_placemements())
    mine = [p for p in placements if not p.vertex.label.startswith("SYSTEM:")]
    return len(mine), len({(p.x, p.y) for p in mine}), len(placements)


def node_reports(plan: NetworkPlan, net, timestep_us: float) -> list[NodeReport]:
    from spikefuse.backends.spinnaker.pynn import stored_weights

    stored = stored_weights(net) if net is not None else {}
    lat = hops_latency_us(plan, timestep_us)
    out = []
    for n in plan.nodes.values():
        rmse = mx = None
        if n.name in stored:
            want, have = stored[n.name]
            err = have - want
            rmse = float(np.sqrt(np.mean(err**2))) if err.size else 0.0
            mx = float(np.abs(err).max(initial=0.0))
        out.append(
            NodeReport(
                n.name,
                n.kind,
                n.size,
                n.n_synapses,
                n.max_step_quanta,
                rmse,
                mx,
                lat[n.name],
                n.approximation,
            )
        )
    return out


def map_virtual(
    model, cfg: SpinnakerConfig, graph_name: str, read_weights_max_synapses: int = 10**9
) -> MappingReport:
    """Compile and map ``model`` on a virtual board in this process (the toolchain's
    environment must already point at the work folder)."""
    import pyNN.spiNNaker as sim

    plan = compile_model(model, cfg.max_step_quanta)
    t0 = time.perf_counter()
    net = build_and_map(sim, plan, cfg, live=True)
    try:
        sim.run(cfg.timestep_ms)
        map_s = time.perf_counter() - t0
        n_cores, n_chips, n_total = placement_counts(plan)
        read = plan.n_synapses <= read_weights_max_synapses
        nodes = node_reports(plan, net if read else None, cfg.timestep_us)
    finally:
        sim.end()
    return MappingReport(
        graph_name,
        True,
        n_cores,
        n_chips,
        n_total,
        plan.n_neurons,
        plan.n_synapses,
        cfg.timestep_us,
        map_s,
        nodes,
    )


def map_in_child(
    graph_paths: list[Path],
    work_dir: Path,
    timeout_s: float = 300.0,
    timestep_ms: float = 1.0,
    read_weights_max_synapses: int = 10**9,
) -> list[MappingReport]:
    """Map graph files one after the other on a virtual board in one fresh process,
    bounded by ``timeout_s``; one report per graph. Weights are read back (quantisation
    error) for graphs of at most ``read_weights_max_synapses`` synapses."""
    cfg = SpinnakerConfig(virtual_board=True, timestep_ms=timestep_ms)
    env = {**os.environ, **prepare(cfg, work_dir)}
    cmd = [
        sys.executable,
        "-m",
        __name__,
        str(work_dir),
        str(timestep_ms),
        str(read_weights_max_synapses),
    ]
    cmd += [str(p) for p in graph_paths]
    try:
        res = subprocess.run(
            cmd, cwd=work_dir, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"mapping did not finish within {timeout_s:.0f} s") from None
    reports = [ln for ln in res.stdout.splitlines() if ln.startswith('{"graph"')]
    if res.returncode != 0 or len(reports) != len(graph_paths):
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise BackendError(f"mapping failed (exit {res.returncode}): {' | '.join(tail)}")
    return [MappingReport.from_json(r) for r in reports]


def _main(argv: list[str]) -> int:
    from spikefuse.builder import build
    from spikefuse.graph import Graph

    work_dir, timestep_ms, max_read = Path(argv[0]), float(argv[1]), int(argv[2])
    cfg = SpinnakerConfig(virtual_board=True, timestep_ms=timestep_ms)
    with toolchain_env(prepare(cfg, work_dir)):
        for path in argv[3:]:
            graph = Graph.load(path)
            report = map_virtual(build(graph), cfg, graph.name, max_read)
            sys.stdout.write(report.to_json() + "\n")
            sys.stdout.flush()
    os._exit(0)  # the toolchain's non-daemon threads must not keep a finished child alive


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
