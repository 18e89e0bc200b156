"""spikefuse: event-driven multi-rate sensor fusion with sigma-delta change-events."""

from spikefuse._version import __version__
from spikefuse.errors import (
    BusError,
    ConfigError,
    EngineError,
    GraphError,
    LogFileError,
    ProtocolError,
    SensorError,
    SpikefuseError,
)

__all__ = [
    "__version__",
    "BusError",
    "ConfigError",
    "EngineError",
    "GraphError",
    "LogFileError",
    "ProtocolError",
    "SensorError",
    "SpikefuseError",
]
