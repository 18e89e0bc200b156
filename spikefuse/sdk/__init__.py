"""The driver SDK: a driver is a config model plus an acquisition loop; the SDK does the
rest (encoding, batching, pacing, heartbeats, retries, NaN counting, clean shutdown).

See ``docs/writing-a-driver.md``. Minimal driver::

    class ThermoConfig(DriverConfig):
        default_groups = {"temp": {"scale": 10.0, "rate_hz": 5.0}}
        name: str = "thermo"
        path: Path

    @driver("thermo", ThermoConfig)
    def THERMO(cfg, ctx):
        path = cfg.resolve_path(cfg.path)
        yield from ctx.poll({"temp": lambda t_ns: [int(path.read_text()) / 1000]})
"""

from spikefuse.sdk.config import (
    DriverConfig,
    DvsSettings,
    GroupConfig,
    RetryConfig,
    default_source_type,
)
from spikefuse.sdk.health import STATE_DEGRADED, STATE_FAILED, STATE_OK, Health
from spikefuse.sdk.items import Events, Frame, Item, Sample
from spikefuse.sdk.registry import (
    DriverSpec,
    driver,
    load_driver_config,
    main,
    resolve_kind,
    run_driver,
)
from spikefuse.sdk.runner import DriverContext, Reader, Runner
from spikefuse.sdk.timing import Pacer, StopSignal

__all__ = [
    "STATE_DEGRADED",
    "STATE_FAILED",
    "STATE_OK",
    "DriverConfig",
    "DriverContext",
    "DriverSpec",
    "DvsSettings",
    "Events",
    "Frame",
    "GroupConfig",
    "Health",
    "Item",
    "Pacer",
    "Reader",
    "RetryConfig",
    "Runner",
    "Sample",
    "StopSignal",
    "default_source_type",
    "driver",
    "load_driver_config",
    "main",
    "resolve_kind",
    "run_driver",
]
