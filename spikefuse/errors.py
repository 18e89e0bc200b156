"""The one exception hierarchy. Every class is also a builtin exception type, so callers
that only know Python's builtins (``except ValueError``) still catch the right things."""


class SpikefuseError(Exception):
    """Base class of every error spikefuse raises on purpose."""


class ConfigError(SpikefuseError, ValueError):
    """A configuration (YAML file, pydantic model, CLI override) is invalid.

    ``where`` names the file:line and/or the dotted field path of the problem."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class GraphError(ConfigError):
    """A fusion graph is invalid: names the node and the field."""

    def __init__(self, message: str, node: str | None = None, field: str | None = None):
        self.node = node
        self.field = field
        where = None
        if node is not None:
            where = f"node '{node}'" + (f", field '{field}'" if field else "")
        super().__init__(message, where)


class ProtocolError(SpikefuseError, ValueError):
    """A wire message could not be decoded. ``reason`` is a short stable key for counters."""

    def __init__(self, message: str, reason: str = "invalid", path: str | None = None):
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class BusError(SpikefuseError, RuntimeError):
    """A transport problem: binding, connecting, authentication setup."""


class EngineError(SpikefuseError, RuntimeError):
    """The engine was used wrongly at run time (not a bad push, which is a ValueError)."""


class LogFileError(SpikefuseError, ValueError):
    """A recording or imported log is unreadable, truncated or corrupt."""


class SensorError(SpikefuseError, OSError):
    """A sensor read failed (the driver SDK retries these with backoff)."""
