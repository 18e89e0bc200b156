"""The fusion daemon (``spikefuse core``): sensor event batches in, the event-driven
engine in the middle, motor commands and status out."""

from spikefuse.core.config import ActuatorMap, CoreConfig, InputMap, load_core_config
from spikefuse.core.daemon import run_core
from spikefuse.core.fusion import FusionCore
from spikefuse.core.motor import MotorChannel
from spikefuse.core.stats import LatencyHistogram

__all__ = [
    "ActuatorMap",
    "CoreConfig",
    "FusionCore",
    "InputMap",
    "LatencyHistogram",
    "MotorChannel",
    "load_core_config",
    "run_core",
]
