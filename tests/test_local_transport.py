"""``local_transport``: one launch field (and one config field per process) puts every
default same-host endpoint on ZeroMQ ``ipc://`` or spikefuse's own ``unix://``. Real
launcher, driver, core, actuator and recorder processes over real sockets."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _core_util import LineReader, read_csv_rows, small_graph, stop, wait_until, write_yaml

from spikefuse.actuators import load_actuator_config, resolve_actuator
from spikefuse.core.config import load_core_config
from spikefuse.errors import ConfigError
from spikefuse.protocol import EventBatch, MotorCommand, decode
from spikefuse.recording.mcapio import open_log
from spikefuse.sdk.registry import load_driver_config, resolve_kind

STEPS = 10
"""The driver's value climbs 2, 4, ... 2*STEPS and then holds: the graph halves it."""
FINAL = float(STEPS)

DRIVER = f"""
from spikefuse.sdk import DriverConfig, driver


class StepConfig(DriverConfig):
    default_groups = {{"x": {{"scale": 1.0, "rate_hz": 400.0}}}}
    name: str = "step"


@driver("step", StepConfig)
def STEP(cfg, ctx):
    n = [0]

    def value(t_ns):
        n[0] += 1
        return [2.0 * min({STEPS}, n[0] // 20)]

    yield from ctx.poll({{"x": value}})
"""


def _robot(tmp_path: Path, launch_over: dict, core_set=(), motors_set=()) -> tuple[Path, Path]:
    """step driver -> core (x -> 0.5 x, exact) -> console actuator, and a recorder that
    names no endpoint (it records the publishers of its inputs)."""
    (tmp_path / "step.py").write_text(DRIVER)
    graph = small_graph(tmp_path / "g.npz", n=1)
    core = write_yaml(
        tmp_path / "core.yaml",
        {
            "graph": str(graph),
            "inputs": {"x": {"sensor": "step", "timeout_s": 5.0}},
            "actuators": {"motors": {"output": "y", "safe_values": 0.0}},
        },
    )
    csv = tmp_path / "m.csv"
    procs = [
        {
            "name": "rec",
            "kind": "record",
            "args": ["-o", str(tmp_path / "rec.mcap"), "--flush-interval", "0.1"],
            "inputs": ["sensor/step", "motor/motors"],
            "restart": "never",
        },
        {
            "name": "core",
            "kind": "core",
            "config": str(core),
            "set": ["wait_for_subscribers=2", "wait_for_subscribers_timeout_s=60", *core_set],
            "inputs": ["sensor/step"],
            "outputs": ["motor/motors", "status/core"],
            "restart": "never",
        },
        {
            "name": "motors",
            "kind": "actuator",
            "type": "console",
            "set": [f"csv={csv}", "print_hz=0", "n_channels=1", "deadman_ms=5000", *motors_set],
            "inputs": ["motor/motors"],
            "restart": "never",
        },
        {
            "name": "step",
            "kind": "driver",
            "type": "step.py:STEP",
            "set": ["wait_for_subscribers=2", "wait_for_subscribers_timeout_s=60"],
            "outputs": ["sensor/step"],
            "restart": "never",
        },
    ]
    data = {"name": "lt", "run_dir": str(tmp_path / "run"), **launch_over, "processes": procs}
    return write_yaml(tmp_path / "robot.yaml", data), csv


def _cmds(csv: Path) -> list[float]:
    return [float(r[4]) for r in read_csv_rows(csv) if r[1] == "cmd"]


def _scheme(path: Path) -> str:
    """``unix`` if a unix:// (SEQPACKET) publisher listens at ``path``, ``ipc`` if a
    ZeroMQ (stream) one does."""
    assert stat.S_ISSOCK(path.stat().st_mode), path
    for kind, scheme in ((socket.SOCK_SEQPACKET, "unix"), (socket.SOCK_STREAM, "ipc")):
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(str(path))
            return scheme
        except OSError:
            continue
        finally:
            probe.close()
    raise AssertionError(f"nothing listens at {path}")


def _run(lf: Path, csv: Path, run: Path, sockets: list[str]) -> tuple[str, dict[str, str]]:
    """Launch, wait for the final command, look at the sockets while they live, stop."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(lf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=lf.parent,
    )
    reader = LineReader(proc)
    try:
        done = wait_until(lambda: FINAL in _cmds(csv) or proc.poll() is not None, 60, 0.02)
        assert done and proc.poll() is None, reader.text()
        schemes = {name: _scheme(run / name) for name in sockets}
    finally:
        stop(proc, 30)
    reader.wait_for(lambda ln: "summary:" in ln, 10)
    assert proc.returncode == 0, reader.text()
    return reader.text(), schemes


def _check_values(csv: Path, rec: Path) -> None:
    cmds = _cmds(csv)
    assert FINAL in cmds, cmds
    # the launch's stop ends the driver's stream too: from then on the core commands the
    # safe value (on_stale: safe applies to an ended input), if the actuator still runs
    last = len(cmds) - 1 - cmds[::-1].index(FINAL)
    assert all(v == 0.0 for v in cmds[last + 1 :]), cmds
    cmds = cmds[: last + 1]
    assert all(v * 2 == int(v * 2) and 0.0 <= v <= FINAL for v in cmds), cmds
    assert cmds == sorted(cmds), cmds  # the input only climbs
    msgs = [decode(m.payload) for m in open_log(rec).messages]
    sent = [m for m in msgs if isinstance(m, MotorCommand)]
    assert sent and FINAL in [float(m.values[0]) for m in sent]
    assert any(isinstance(m, EventBatch) and m.sensor == "step" for m in msgs)


@pytest.mark.parametrize("transport", ["unix", "zmq", None])
def test_one_switch_moves_every_same_host_link(tmp_path, transport):
    over = {} if transport is None else {"local_transport": transport}
    lf, csv = _robot(tmp_path, over)
    run = tmp_path / "run"
    out, schemes = _run(lf, csv, run, ["step.sock", "core.sock"])
    scheme = "unix" if transport == "unix" else "ipc"  # default: zmq, today's behaviour
    assert schemes == {"step.sock": scheme, "core.sock": scheme}
    # what the processes say they use: the core's inputs and output, the recorder's
    assert (
        f"inputs from {scheme}://{run}/step.sock, publishing on {scheme}://{run}/core.sock" in out
    )
    rec_line = re.search(r"\[launch\] started rec .*", out).group(0)
    assert f"--endpoint {scheme}://{run}/step.sock" in rec_line
    assert f"--endpoint {scheme}://{run}/core.sock" in rec_line
    _check_values(csv, tmp_path / "rec.mcap")


def test_an_explicit_endpoint_wins_over_the_switch(tmp_path):
    run = tmp_path / "run"
    core_ep = f"ipc://{run}/core-z.sock"
    lf, csv = _robot(
        tmp_path,
        {"local_transport": "unix"},
        core_set=[f"endpoint={core_ep}"],
        motors_set=[f"endpoint={core_ep}"],
    )
    out, schemes = _run(lf, csv, run, ["step.sock", "core-z.sock"])
    assert schemes == {"step.sock": "unix", "core-z.sock": "ipc"}
    assert not (run / "core.sock").exists()
    rec_line = re.search(r"\[launch\] started rec .*", out).group(0)
    assert f"--endpoint unix://{run}/step.sock" in rec_line
    assert f"--endpoint {core_ep}" in rec_line
    _check_values(csv, tmp_path / "rec.mcap")


def _launch_error(lf: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "spikefuse", "launch", str(lf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "started" not in proc.stdout
    return proc.stdout + proc.stderr


def test_bad_values_name_the_file_line_and_field(tmp_path):
    lf, _ = _robot(tmp_path, {"local_transport": "tcp"})
    out = _launch_error(lf)
    line = lf.read_text().splitlines().index("local_transport: tcp") + 1
    assert f"{lf}:{line}: local_transport: Input should be 'zmq' or 'unix'; found 'tcp'" in out
    # unix:// carries no CurveZMQ: with security it is an error, never a silent fallback
    lf, _ = _robot(tmp_path, {"local_transport": "unix", "security": {"key_dir": "keys"}})
    out = _launch_error(lf)
    line = lf.read_text().splitlines().index("local_transport: unix") + 1
    assert f"{lf}:{line}: local_transport: expected zmq with 'security'" in out
    # a process started by hand: its own config file
    core = tmp_path / "core.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "spikefuse", "core", "--config", str(core)]
        + ["--set", "local_transport=udp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "local_transport: Input should be 'zmq' or 'unix'; found 'udp'" in proc.stderr


def test_a_process_started_by_hand_takes_the_switch_from_its_config(tmp_path):
    run = tmp_path / "run"
    core_file = write_yaml(
        tmp_path / "core.yaml",
        {
            "graph": str(small_graph(tmp_path / "g.npz", n=1)),
            "run_dir": str(run),
            "local_transport": "unix",
            "inputs": {
                "x": {"sensor": "imu"},
                "z": {"sensor": "cam", "endpoint": f"ipc://{run}/cam.sock"},
            },
        },
    )
    core = load_core_config(core_file)
    assert core.resolved_endpoint() == f"unix://{run}/core.sock"
    assert core.sensor_endpoint(core.inputs["x"]) == f"unix://{run}/imu.sock"
    assert core.sensor_endpoint(core.inputs["z"]) == f"ipc://{run}/cam.sock"
    sets = [f"run_dir={run}", "local_transport=unix"]
    assert (
        load_driver_config(resolve_kind("imu"), None, sets).resolved_endpoint()
        == f"unix://{run}/imu.sock"
    )
    console = resolve_actuator("console")
    act = load_actuator_config(console, None, sets)
    assert act.resolved_endpoint() == f"unix://{run}/core.sock"
    zmq_act = load_actuator_config(console, None, [f"run_dir={run}"])
    assert zmq_act.resolved_endpoint() == f"ipc://{run}/core.sock"
    with pytest.raises(ConfigError, match="local_transport: unix carries no CurveZMQ"):
        load_actuator_config(console, None, [*sets, f"security.secret_key_file={run}/k"])


def test_the_view_follows_the_launch_or_its_own_option(tmp_path):
    from spikefuse.cli import build_parser
    from spikefuse.cli.cmd_view import build_config

    lf, _ = _robot(tmp_path, {"local_transport": "unix"})
    run = tmp_path / "run"
    cfg = build_config(build_parser().parse_args(["view", "--launch", str(lf)]))
    assert cfg.status_endpoint() == f"unix://{run}/view.sock"
    assert f"unix://{run}/core.sock" in cfg.endpoints
    assert cfg.sensor_endpoints == [f"unix://{run}/step.sock"]
    by_hand = ["view", "--endpoint", f"ipc://{run}/x.sock", "--run-dir", str(run)]
    cfg = build_config(build_parser().parse_args([*by_hand, "--local-transport", "unix"]))
    assert cfg.status_endpoint() == f"unix://{run}/view.sock"
    assert build_config(build_parser().parse_args(by_hand)).status_endpoint() == (
        f"ipc://{run}/view.sock"
    )
