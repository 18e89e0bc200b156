"""What a launch file tells the view: the run directory, every publisher's endpoint and the
pixel layout of every DVS stream; and the process ``spikefuse launch --view`` adds."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from spikefuse.errors import ConfigError
from spikefuse.launch.check import check_process_config, process_endpoints
from spikefuse.launch.model import LAUNCH_KEY, LaunchFile, ProcessSpec
from spikefuse.sdk.config import DriverConfig, DvsSettings
from spikefuse.transport.endpoint import LocalTransport
from spikefuse.view.config import CameraLayout
from spikefuse.view.state import stream_key

VIEW_PROCESS = "view"


@dataclass
class LaunchView:
    run_dir: Path
    endpoints: list[str] = field(default_factory=list)
    local_transport: LocalTransport = "zmq"
    """the launch's: the view's own status socket goes on it"""
    sensor_endpoints: list[str] = field(default_factory=list)
    """drivers' publishers: connected once the cores (``cores``) are up"""
    cores: list[str] = field(default_factory=list)
    security: dict[str, object] | None = None
    cameras: dict[str, CameraLayout] = field(default_factory=dict)


def driver_cameras(cfg: DriverConfig) -> dict[str, CameraLayout]:
    """DVS streams of a driver: a config with ``dvs`` settings feeds its events group(s)
    with scale ``1/dvs.threshold`` (one count = one threshold crossing, the rule the
    camera driver enforces); those groups' inputs are laid out ``dvs.width`` x ``dvs.height``."""
    dvs = getattr(cfg, "dvs", None)
    if not isinstance(dvs, DvsSettings):
        return {}
    layout = CameraLayout(width=dvs.width, height=dvs.height)
    return {
        stream_key(cfg.name, cfg.input_of(g)): layout
        for g in cfg.enabled_groups()
        if abs(cfg.groups[g].scale * dvs.threshold - 1.0) < 1e-9
    }


def launch_view(launch: LaunchFile) -> LaunchView:
    """Load every process's config the way the process will and collect what to
    subscribe to (the launcher's own status socket included) and the DVS layouts. The
    drivers' publishers are connected only after the cores sent their first Status: a
    driver with ``wait_for_subscribers`` waits for the core, not for the view."""
    run_dir = launch.resolve_path(launch.run_dir)
    lv = LaunchView(run_dir, [launch.status_endpoint()], launch.local_transport)
    lv.security = launch.security_for(LAUNCH_KEY)  # the launcher's keys: the view is its child
    for i, p in enumerate(launch.processes):
        if p.name == VIEW_PROCESS:
            continue
        cfg = check_process_config(launch, i, p)
        if isinstance(cfg, DriverConfig):
            lv.sensor_endpoints += process_endpoints(launch, p, cfg)
            lv.cameras.update(driver_cameras(cfg))
        else:
            lv.endpoints += process_endpoints(launch, p, cfg)
        if p.kind == "core":
            lv.cores.append(cfg.name)  # type: ignore[union-attr]
    lv.endpoints = list(dict.fromkeys(lv.endpoints))
    lv.sensor_endpoints = [e for e in dict.fromkeys(lv.sensor_endpoints) if e not in lv.endpoints]
    return lv


def add_view_process(
    launch: LaunchFile, launch_file: Path, overrides: list[str], port: int
) -> None:
    """Append the process ``spikefuse launch FILE --view`` adds: ``spikefuse view --launch
    FILE`` with the same overrides, started last; not required (a viewer that fails never
    stops the robot)."""
    if any(p.name == VIEW_PROCESS for p in launch.processes):
        raise ConfigError(
            f"--view adds a process named '{VIEW_PROCESS}', which {launch_file} already has",
            "--view",
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"expected a port in 0..65535, found {port}", "--view")
    argv = [sys.executable, "-m", "spikefuse", "view", "--launch", str(launch_file.absolute())]
    argv += ["--port", str(port), "--grpc-port", "0"]
    for item in overrides:
        argv += ["--set", item]
    spec = ProcessSpec(
        name=VIEW_PROCESS,
        kind="exec",
        args=argv,
        restart="on-failure",
        max_restarts=2,
        required=False,
        stop_timeout_s=5.0,
    )
    launch.processes.append(spec)
