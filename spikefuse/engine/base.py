"""The Python front of every engine: validation happens here, before any call crosses into
compiled code. Subclasses implement the ``_``-prefixed hooks."""

from __future__ import annotations

from typing import Any

import numpy as np

from spikefuse.builder import Model, build
from spikefuse.errors import EngineError
from spikefuse.graph.graph import Graph, ResolvedGraph

OUTPUT_DTYPE = np.dtype([("t_ns", "<i8"), ("output", "<i4"), ("channel", "<i4"), ("value", "<f8")])

_I32 = np.iinfo(np.int32)


def _as_int32(name: str, a: Any) -> np.ndarray:
    if type(a) is np.ndarray and a.dtype == np.int32 and a.ndim == 1 and a.flags.c_contiguous:
        return a  # fast path: already what the core takes
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, found shape {arr.shape}")
    if arr.dtype == np.int32:
        return np.ascontiguousarray(arr)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, found dtype {arr.dtype}")
    if arr.size and (arr.min() < _I32.min or arr.max() > _I32.max):
        raise ValueError(f"{name} has values outside int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


class EngineBase:
    """Common API: ``start``, ``push``, ``advance``, ``next_deadline``, counters, values."""

    def __init__(self, graph: Graph | ResolvedGraph | Model):
        self.model: Model = build(graph)
        self.output_names: list[str] = list(self.model.output_names)
        self.input_names: list[str] = list(self.model.input_names)
        self._input_index = {
            n: int(i) for n, i in zip(self.model.input_names, self.model.input_nodes, strict=True)
        }
        self._input_size = {int(i): int(self.model.node_size[i]) for i in self.model.input_nodes}
        self.now: int = 0
        self.started = False
        self.events_in = 0
        self.events_out = 0
        self._latest_only = False
        self._n_folded = 0
        self._init_state(self.model)

    # -- public API ---------------------------------------------------------------------
    @property
    def latest_only(self) -> bool:
        """False (default): ``start``/``push``/``advance`` return every output event.
        True: only the last event of each Output node that changed (time order kept), for a
        consumer that takes each node's newest value and when it last changed (the fusion
        core). The compiled engine then folds its buffer while it fills, so one call's
        memory does not grow with the number of crossings it fires (an advance over a long
        stall of a flooded Integrator). Folded events still count in ``events_out``; the
        engine's state is the same either way."""
        return self._latest_only

    @latest_only.setter
    def latest_only(self, on: bool) -> None:
        self._latest_only = bool(on)
        self._set_latest_only(self._latest_only)

    def start(self, t_ns: int = 0) -> np.ndarray:
        """Settle the initial state (biases, integrator y0) at ``t_ns``; return its outputs."""
        if self.started:
            raise EngineError("engine already started")
        self.now = int(t_ns)
        self.started = True
        self._start(self.now)
        return self._collect()

    def push(self, t_ns: int, input: str, channels: Any, counts: Any) -> np.ndarray:
        """Fire crossings due at or before ``t_ns``, then apply the batch and settle.

        Raises ``ValueError`` for an unknown input, out-of-range channel, mismatched
        lengths or a time before the engine's clock; nothing is applied in that case."""
        t_ns = int(t_ns)
        node = self._input_index.get(input)
        if node is None:
            raise ValueError(f"unknown input '{input}'; the graph has inputs {self.input_names}")
        ch = _as_int32("channels", channels)
        ct = _as_int32("counts", counts)
        if ch.shape != ct.shape:
            raise ValueError(f"channels ({ch.size}) and counts ({ct.size}) differ in length")
        size = self._input_size[node]
        if ch.size and (ch.min() < 0 or ch.max() >= size):
            bad = int(ch[(ch < 0) | (ch >= size)][0])
            raise ValueError(f"channel {bad} out of range for input '{input}' of size {size}")
        if not self.started:
            self.start(t_ns)
        if t_ns < self.now:
            raise ValueError(
                f"t_ns {t_ns} is before the engine clock {self.now} (push in time order)"
            )
        self.events_in += ch.size
        self._push(t_ns, node, ch, ct)
        self.now = t_ns
        return self._collect()

    def push_many(
        self, t_ns: Any, inputs: Any, batch_ptr: Any, channels: Any, counts: Any
    ) -> np.ndarray:
        """Push many batches in one call (offline replay, benchmarks): batch ``b`` is
        ``channels[batch_ptr[b]:batch_ptr[b+1]]`` into input ``inputs[b]`` (a name, or one name
        for all) at ``t_ns[b]``. Same result as calling :meth:`push` batch by batch; all
        batches are validated before any is applied."""
        t = np.ascontiguousarray(t_ns, dtype=np.int64)
        if t.ndim != 1:
            raise ValueError("t_ns must be 1-D")
        ptr = np.ascontiguousarray(batch_ptr, dtype=np.int64)
        ch = _as_int32("channels", channels)
        ct = _as_int32("counts", counts)
        if ch.shape != ct.shape:
            raise ValueError(f"channels ({ch.size}) and counts ({ct.size}) differ in length")
        if ptr.shape != (t.size + 1,) or (t.size and (ptr[0] != 0 or ptr[-1] != ch.size)):
            raise ValueError("batch_ptr must have len(t_ns)+1 entries from 0 to len(channels)")
        if t.size and (np.any(np.diff(ptr) < 0) or np.any(np.diff(t) < 0)):
            raise ValueError("batch_ptr and t_ns must be non-decreasing")
        names = [inputs] * t.size if isinstance(inputs, str) else list(inputs)
        if len(names) != t.size:
            raise ValueError(f"{len(names)} input names for {t.size} batches")
        nodes = np.empty(t.size, np.int32)
        limits = np.empty(ch.size, np.int64)
        for b, name in enumerate(names):
            node = self._input_index.get(name)
            if node is None:
                raise ValueError(
                    f"batch {b}: unknown input '{name}'; the graph has inputs {self.input_names}"
                )
            nodes[b] = node
            limits[ptr[b] : ptr[b + 1]] = self._input_size[node]
        if ch.size and (ch.min() < 0 or np.any(ch >= limits)):
            bad = int(np.flatnonzero((ch < 0) | (ch >= limits))[0])
            b = int(np.searchsorted(ptr, bad, side="right") - 1)
            raise ValueError(
                f"batch {b}: channel {int(ch[bad])} out of range for input '{names[b]}'"
            )
        if not t.size:
            return self._collect()
        if not self.started:
            self.start(int(t[0]))
        if int(t[0]) < self.now:
            raise ValueError(f"t_ns {int(t[0])} is before the engine clock {self.now}")
        self.events_in += ch.size
        self._push_many(t, nodes, ptr, ch, ct)
        self.now = int(t[-1])
        return self._collect()

    def advance(self, t_ns: int) -> np.ndarray:
        """Fire every scheduled crossing at or before ``t_ns``; return the outputs."""
        t_ns = int(t_ns)
        if not self.started:
            self.start(t_ns)
        if t_ns < self.now:
            raise ValueError(f"t_ns {t_ns} is before the engine clock {self.now}")
        self._advance(t_ns)
        self.now = t_ns
        return self._collect()

    def next_deadline(self) -> int | None:
        """Time (ns) of the next scheduled integrator crossing, or None when idle."""
        return self._next_deadline()

    def node_value(self, name: str) -> np.ndarray:
        """Decoded value ``sent/k`` of every unit of node ``name``."""
        sl = self._units(name)
        return self._sent()[sl] / self.model.unit_scale[sl]

    def output_value(self, name: str) -> np.ndarray:
        if name not in self.output_names:
            raise ValueError(f"unknown output '{name}'; outputs are {self.output_names}")
        return self.node_value(name)

    def integrator_state(self, name: str) -> np.ndarray:
        """Continuous state y of an Integrator node, as of its last update."""
        return self._integrator_y()[self._units(name)].copy()

    def residuals(self) -> np.ndarray:
        """``k*value - sent`` per unit (the herding residual; always within ±1/2)."""
        return self._residuals()

    @property
    def counters(self) -> dict[str, Any]:
        spikes, syn_ops, n_sat, n_cross, spikes_in = self._counter_arrays()
        return {
            "syn_ops": int(syn_ops),
            "spikes": {n: int(s) for n, s in zip(self.model.node_names, spikes, strict=True)},
            "events_in": self.events_in,
            "spikes_in": int(spikes_in),
            "events_out": self.events_out + self._folded(),
            "n_saturated": int(n_sat),
            "n_crossings": int(n_cross),
        }

    # -- helpers ------------------------------------------------------------------------
    def _units(self, name: str) -> slice:
        try:
            return self.model.units_of(name)
        except ValueError:
            raise ValueError(f"unknown node '{name}'") from None

    def _collect(self) -> np.ndarray:
        out = self._take_outputs()
        if isinstance(out, np.ndarray):
            arr = out
        else:
            arr = np.array(out, dtype=OUTPUT_DTYPE) if out else np.zeros(0, OUTPUT_DTYPE)
        if self._latest_only and arr.size > 1 and not self._folds_itself:
            arr = self._fold(arr)
        self.events_out += int(arr.size)
        return arr

    def _fold(self, arr: np.ndarray) -> np.ndarray:
        """The last event of each output in ``arr``, in time order (see ``latest_only``)."""
        _, last_in_rev = np.unique(arr["output"][::-1], return_index=True)
        keep = np.sort(arr.size - 1 - last_in_rev)
        self._n_folded += arr.size - keep.size
        return arr[keep]

    # -- hooks --------------------------------------------------------------------------
    _folds_itself = False
    """The backend folds its output buffer itself (else :meth:`_collect` does)."""

    def _set_latest_only(self, on: bool) -> None:
        """Tell the backend (the compiled engine folds its own buffer)."""

    def _folded(self) -> int:
        """Output events folded away by the backend itself (see ``latest_only``)."""
        return self._n_folded

    def _init_state(self, m: Model) -> None:  # pragma: no cover
        raise NotImplementedError

    def _start(self, t_ns: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _push(
        self, t_ns: int, node: int, channels: np.ndarray, counts: np.ndarray
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    def _push_many(self, t, nodes, ptr, ch, ct) -> None:
        for b in range(t.size):
            self._push(int(t[b]), int(nodes[b]), ch[ptr[b] : ptr[b + 1]], ct[ptr[b] : ptr[b + 1]])

    def _advance(self, t_ns: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _take_outputs(self):  # pragma: no cover
        raise NotImplementedError

    def _next_deadline(self) -> int | None:  # pragma: no cover
        raise NotImplementedError

    def _sent(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _counter_arrays(self):  # pragma: no cover
        raise NotImplementedError

    def _integrator_y(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _residuals(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError
