"""``SpinnakerEngine``: the graph running on a SpiNNaker machine behind the engine API.

:class:`~spikefuse.core.fusion.FusionCore` drives it exactly like the in-process engine:
``push`` turns a bus batch into EIEIO spike packets for the input's injector pair
(:mod:`.eieio`), and the live output spikes of every Output pair, received on the live
connection's thread, come back as output events ``(t_ns, output, channel, sent/k)`` on the
next ``push``/``advance``. While the board runs, ``next_deadline`` asks to be polled once a
time step, so received spikes become MotorCommands within a step of arriving.

On a virtual board the graph is compiled and mapped (cores, chips, per-node weight
quantisation are logged) and ``start`` then fails with :class:`BackendError`: no board
is reachable, so nothing can run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.backends.spinnaker.config import SpinnakerConfig
from spikefuse.backends.spinnaker.eieio import InputKeys, batch_packets
from spikefuse.backends.spinnaker.plan import MappingError, compile_model
from spikefuse.backends.spinnaker.toolchain import (
    BackendError,
    build_and_map,
    node_reports,
    placement_counts,
    prepare,
    toolchain_env,
)
from spikefuse.builder import Model
from spikefuse.engine.base import EngineBase

log = logging.getLogger(__name__)


class LiveIO:
    """The host side of live I/O, without the toolchain: bus counts -> EIEIO packets for
    the input injectors, live output spikes (received on the connection's thread) ->
    output events ``(t_ns, output, channel, sent/k)``, and the counts behind both."""

    def __init__(self, model: Model, plan):
        self.model = model
        self.keys = InputKeys({n: int(model.node_size[model.index(n)]) for n in model.input_names})
        for name, size in self.keys.sizes.items():
            if size > 1 << 16:
                raise MappingError(
                    f"{size} channels: live injection sends 16-bit atom ids (at most 65536)",
                    name,
                )
        self.sent = np.zeros(model.n_units, np.int64)
        self.spikes = np.zeros(model.n_nodes, np.int64)
        self.spikes_in = 0
        self._received: deque[tuple[str, list[int]]] = deque()  # append/popleft: thread-safe
        self._events: list[tuple[int, int, int, float]] = []
        self.output_labels = {
            label: (i, sign)
            for i, name in enumerate(model.output_names)
            for label, sign in zip(plan.pair(name), (1, -1), strict=True)
        }

    def encode(self, node: int, channels: np.ndarray, counts: np.ndarray):
        """(injector label, EIEIO message) pairs for a batch into input node ``node``."""
        m = self.model
        packets = batch_packets(self.keys, m.node_names[node], channels, counts)
        off = int(m.node_off[node])
        np.add.at(self.sent, off + channels.astype(np.int64), counts.astype(np.int64))
        n = int(np.abs(counts).sum())
        self.spikes[node] += n
        self.spikes_in += n
        return packets

    def receive(self, label: str, atoms: list[int]) -> None:
        """Live output spikes of one Output population (the connection's callback)."""
        self._received.append((label, list(atoms)))

    def drain(self, t_ns: int) -> None:
        """Turn the received spikes into output events stamped ``t_ns``."""
        m = self.model
        while self._received:
            label, atoms = self._received.popleft()
            idx, sign = self.output_labels[label]
            node = int(m.output_nodes[idx])
            off = int(m.node_off[node])
            k = float(m.unit_scale[off])
            for a in atoms:
                self.sent[off + a] += sign
                self.spikes[node] += 1
                self._events.append((t_ns, idx, a, self.sent[off + a] / k))

    def take_events(self) -> list[tuple[int, int, int, float]]:
        out, self._events = self._events, []
        return out


class SpinnakerEngine(EngineBase):
    """See the module doc. ``close()`` stops the board and releases it."""

    def __init__(self, graph, cfg: SpinnakerConfig | None, run_dir: Path, name: str = "core"):
        if cfg is None:
            from spikefuse.errors import ConfigError

            raise ConfigError("backend 'spinnaker' needs a 'spinnaker:' section", "spinnaker")
        self.cfg = cfg
        self.work_dir = Path(cfg.work_dir or Path(run_dir) / f"spinnaker-{name}")
        super().__init__(graph)

    # -- EngineBase hooks ---------------------------------------------------------------
    def _init_state(self, m: Model) -> None:
        self.plan = compile_model(m, self.cfg.max_step_quanta)  # MappingError names the node
        self.io = LiveIO(m, self.plan)
        self._sim: Any = None
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._run_error: BaseException | None = None

    def _start(self, t_ns: int) -> None:
        env = prepare(self.cfg, self.work_dir)
        with toolchain_env(env):
            import pyNN.spiNNaker as sim

            self._sim = sim
            if self.cfg.virtual_board:
                self._map_only(sim)
            self._start_board(sim)

    def _map_only(self, sim: Any) -> None:
        t0 = time.perf_counter()
        net = build_and_map(sim, self.plan, self.cfg, live=True)
        try:
            sim.run(self.cfg.timestep_ms)
            cores, chips, total = placement_counts(self.plan)
            for n in node_reports(self.plan, net, self.cfg.timestep_us):
                log.info(
                    "node '%s' (%s x%d): %d synapses, weight quantisation rmse %s, latency %.0f us",
                    n.name,
                    n.kind,
                    n.size,
                    n.n_synapses,
                    "-"
                    if n.weight_quantisation_rmse is None
                    else f"{n.weight_quantisation_rmse:.3g}",
                    n.latency_us,
                )
        finally:
            sim.end()
            self._sim = None
        raise BackendError(
            f"no SpiNNaker board reachable: the graph mapped onto {cores} cores of {chips} "
            f"chip(s) of a virtual board ({total} cores with monitors) in "
            f"{time.perf_counter() - t0:.1f} s, but a virtual board cannot run it; set "
            "spinnaker.machine_host or spinnaker.spalloc_server"
        )

    def _start_board(self, sim: Any) -> None:
        from spynnaker.pyNN.connections import SpynnakerLiveSpikesConnection

        port = self.cfg.live_port
        build_and_map(sim, self.plan, self.cfg, live=True, notify_port=port)
        self._conn = SpynnakerLiveSpikesConnection(
            receive_labels=list(self.io.output_labels),
            send_labels=[lab for n in self.io.keys.sizes for lab in self.io.keys.labels(n)],
            local_port=port,
        )
        for label in self.io.output_labels:
            self._conn.add_receive_callback(label, self._on_spikes)
        first = next(iter(self.io.keys.sizes), None)
        if first is not None:
            self._conn.add_start_resume_callback(self.io.keys.labels(first)[0], self._on_start)
        self._thread = threading.Thread(target=self._run, name="spinnaker-run", daemon=True)
        self._thread.start()
        if not self._started.wait(self.cfg.start_timeout_s) or self._run_error is not None:
            why = self._run_error or f"not started within {self.cfg.start_timeout_s:.0f} s"
            raise BackendError(f"SpiNNaker {self.cfg.machine} did not start: {why}")

    def _run(self) -> None:
        try:
            self._sim.external_devices.run_forever()
        except Exception as exc:  # noqa: BLE001  (thread boundary: start() raises it)
            self._run_error = exc
            self._started.set()

    def _on_start(self, label: str, conn: Any) -> None:
        self._started.set()

    def _on_spikes(self, label: str, t_ms: int, atoms: list[int]) -> None:
        self.io.receive(label, atoms)

    def _push(self, t_ns: int, node: int, channels: np.ndarray, counts: np.ndarray) -> None:
        for label, msg in self.io.encode(node, channels, counts):
            self._conn.send_eieio_message(msg, label)
        self.io.drain(t_ns)

    def _advance(self, t_ns: int) -> None:
        self.io.drain(t_ns)

    def _take_outputs(self):
        return self.io.take_events()

    def _next_deadline(self) -> int | None:
        if self._thread is None:
            return None
        return self.now + round(self.cfg.timestep_ms * 1e6)

    def _sent(self) -> np.ndarray:
        return self.io.sent

    def _counter_arrays(self):
        return self.io.spikes, 0, 0, 0, self.io.spikes_in

    def _integrator_y(self) -> np.ndarray:
        return np.zeros(self.model.n_units)

    def _residuals(self) -> np.ndarray:
        return np.zeros(self.model.n_units)

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the run and release the machine (idempotent; bounded by start_timeout_s)."""
        from spinn_utilities.exceptions import SimulatorShutdownException

        sim, self._sim = self._sim, None
        thread, self._thread = self._thread, None
        if sim is not None:
            try:
                if thread is not None and thread.is_alive() and self._run_error is None:
                    sim.external_devices.request_stop()
                    thread.join(self.cfg.start_timeout_s)
                if thread is None or not thread.is_alive():
                    sim.end()  # a thread still inside the toolchain dies with the process
            except SimulatorShutdownException:
                pass  # the toolchain already ended itself after a failed run
        if self._conn is not None:
            self._conn.close()
            self._conn = None
