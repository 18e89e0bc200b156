"""Launch files (pydantic model, validation) and the process supervisor."""

from spikefuse.launch.model import LaunchFile, ProcessSpec, load_launch
from spikefuse.launch.supervisor import Supervisor

__all__ = ["LaunchFile", "ProcessSpec", "Supervisor", "load_launch"]
