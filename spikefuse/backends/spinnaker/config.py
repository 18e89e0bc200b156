"""``spinnaker:`` section of a core config (pure pydantic: no toolchain import here)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from spikefuse.config import StrictModel


class SpinnakerConfig(StrictModel):
    """Where the graph runs and how it is mapped.

    Exactly one machine: ``machine_host`` (a directly attached board's IP or host name),
    ``spalloc_server`` (URL of a spalloc service that allocates boards) or
    ``virtual_board: true`` (map only: a 48-chip board that exists on the host; nothing
    runs, so ``spikefuse core`` maps the graph, reports it and exits with an error)."""

    machine_host: str | None = Field(default=None, min_length=1, max_length=253)
    spalloc_server: str | None = Field(default=None, min_length=1, max_length=1024)
    spalloc_user: str | None = Field(default=None, min_length=1, max_length=256)
    spalloc_machine: str | None = Field(default=None, min_length=1, max_length=256)
    n_boards: int = Field(1, ge=1, le=1200)
    virtual_board: bool = False
    version: Literal[3, 5] = 5
    """board version: 5 = the 48-chip SpiNN-5 board, 3 = the 4-chip SpiNN-3 board"""
    timestep_ms: Literal[1.0, 0.1] = 1.0
    """machine time step; 0.1 ms runs with a time-scale factor of 10 (10x slower than real time)"""
    max_step_quanta: float = Field(0.5, gt=0.0, le=1.0)
    """largest membrane step of one synapse, in thresholds; larger ones are split over delays"""
    neurons_per_core: int = Field(256, ge=1, le=256)
    live_port: int = Field(19999, ge=1024, le=65535)
    """local UDP port of the live spike connection: injection, live output, and the
    toolchain's notification that its database is ready"""
    start_timeout_s: float = Field(300.0, gt=0.0, le=3600.0)
    """mapping + loading must finish within this time"""
    work_dir: Path | None = None
    """toolchain folder (its cfg, reports); default <run_dir>/spinnaker-<core name>"""

    @model_validator(mode="after")
    def _one_machine(self) -> SpinnakerConfig:
        given = [
            n
            for n, v in (
                ("machine_host", self.machine_host),
                ("spalloc_server", self.spalloc_server),
                ("virtual_board", self.virtual_board or None),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of machine_host, spalloc_server, virtual_board: true"
                f" (found {', '.join(given) or 'none'})"
            )
        if self.spalloc_user is not None and self.spalloc_server is None:
            raise ValueError("spalloc_user needs spalloc_server")
        return self

    @property
    def machine(self) -> str:
        """The machine in words, for messages."""
        if self.virtual_board:
            return "a virtual board"
        if self.machine_host is not None:
            return f"board {self.machine_host}"
        return f"spalloc {self.spalloc_server}"

    @property
    def time_scale_factor(self) -> int:
        return 1 if self.timestep_ms == 1.0 else 10

    @property
    def timestep_us(self) -> float:
        return self.timestep_ms * 1000.0
