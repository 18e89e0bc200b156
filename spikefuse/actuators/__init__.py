"""Actuator processes (``spikefuse actuator KIND --config FILE``) with a deadman."""

from spikefuse.actuators.base import (
    Actuator,
    ActuatorConfig,
    ActuatorKind,
    ActuatorRunner,
    actuator_kinds,
    load_actuator_config,
    register_actuator,
    resolve_actuator,
    run_actuator,
)

__all__ = [
    "Actuator",
    "ActuatorConfig",
    "ActuatorKind",
    "ActuatorRunner",
    "actuator_kinds",
    "load_actuator_config",
    "register_actuator",
    "resolve_actuator",
    "run_actuator",
]
