"""Run built graphs. :class:`Engine` is the compiled event loop; :class:`ReferenceEngine`
is the pure-NumPy oracle with the same semantics and API."""

from spikefuse.engine.base import OUTPUT_DTYPE, EngineBase
from spikefuse.engine.engine import Engine
from spikefuse.engine.reference import ReferenceEngine

__all__ = ["OUTPUT_DTYPE", "Engine", "EngineBase", "ReferenceEngine"]
