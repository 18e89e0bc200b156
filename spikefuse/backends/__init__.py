"""Runners of a built graph other than the in-process engine.

:func:`select_engine` is the one backend selection point of ``spikefuse core``: it returns
an object with the :class:`~spikefuse.engine.EngineBase` API for the configured backend
(``core: {backend: engine | spinnaker}``); :func:`session` closes it when the daemon ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spikefuse.core.config import CoreConfig
    from spikefuse.engine import EngineBase
    from spikefuse.graph import ResolvedGraph


def select_engine(cfg: CoreConfig, graph: ResolvedGraph) -> EngineBase:
    """The runner of ``graph`` for ``cfg.backend``."""
    if cfg.backend == "spinnaker":
        from spikefuse.backends.spinnaker.runner import SpinnakerEngine

        return SpinnakerEngine(graph, cfg.spinnaker, cfg.resolve_path(cfg.run_dir), cfg.name)
    from spikefuse.engine import Engine

    return Engine(graph)


@contextmanager
def session(engine: EngineBase) -> Iterator[EngineBase]:
    """Close ``engine`` on exit if it holds outside resources (a SpiNNaker machine)."""
    try:
        yield engine
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
