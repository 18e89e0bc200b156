"""The engine: a thin Python class in front of the compiled event loop."""

from __future__ import annotations

import numpy as np

from spikefuse.builder import Model
from spikefuse.engine import _engine
from spikefuse.engine._engine import Core
from spikefuse.engine.base import OUTPUT_DTYPE, EngineBase
from spikefuse.errors import EngineError
from spikefuse.graph import kinds

assert OUTPUT_DTYPE.itemsize == 24, "OutEvent layout must match OUTPUT_DTYPE"


def check_numbering(compiled=_engine) -> None:
    """The compiled enums are generated from :mod:`spikefuse.graph.kinds` at build time; a
    build older than the numbering (a new node type without a rebuild) is refused here."""
    for what, attr, want in (
        ("node kinds", "COMPILED_NODE_KINDS", kinds.NODE_KINDS),
        ("edge kinds", "COMPILED_EDGE_KINDS", kinds.EDGE_KINDS),
        ("activations", "COMPILED_ACTIVATIONS", kinds.ACTIVATIONS),
    ):
        got = getattr(compiled, attr, None)
        if got != want:
            raise EngineError(
                f"the compiled engine's {what} {got} differ from spikefuse.graph.kinds {want}: "
                "rebuild it (pip install -e . or pip install .)"
            )


check_numbering()


class Engine(EngineBase):
    """Event-driven sigma-delta engine (Cython core). See :class:`EngineBase` for the API."""

    def _init_state(self, m: Model) -> None:
        self._core = Core(m)

    def _start(self, t_ns: int) -> None:
        self._core.start(t_ns)

    def _push(self, t_ns: int, node: int, channels: np.ndarray, counts: np.ndarray) -> None:
        self._core.push(t_ns, node, channels, counts)

    def _push_many(self, t, nodes, ptr, ch, ct) -> None:
        self._core.push_many(t, nodes, ptr, ch, ct)

    def _advance(self, t_ns: int) -> None:
        self._core.advance(t_ns)

    _folds_itself = True

    def _set_latest_only(self, on: bool) -> None:
        self._core.latest_only = on

    def _folded(self) -> int:
        return self._core.n_folded

    def _take_outputs(self) -> np.ndarray:
        return self._core.take_outputs(OUTPUT_DTYPE)

    def _next_deadline(self) -> int | None:
        return self._core.next_deadline()

    def _sent(self) -> np.ndarray:
        return self._core.sent_array()

    def _counter_arrays(self):
        c = self._core
        return c.spikes_array(), c.syn_ops, c.n_saturated, c.n_crossings, c.spikes_in

    def _integrator_y(self) -> np.ndarray:
        return self._core.y_array()

    def _residuals(self) -> np.ndarray:
        self._core.now = self.now
        return self._core.residuals()
