"""validate / schema / demo / top and the recorder as a launch process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from _core_util import wait_until, write_yaml

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spikefuse", *args], capture_output=True, text=True, timeout=timeout
    )


def test_validate_ok_and_errors(tmp_path):
    r = _run("validate", str(REPO / "launch/demo.yaml"))
    assert r.returncode == 0, r.stderr
    assert "4 processes" in r.stdout
    r = _run("validate", str(REPO / "configs/core/demo.yaml"))
    assert r.returncode == 0 and "graph 'demo'" in r.stdout
    bad = tmp_path / "core.yaml"
    bad.write_text(
        f"graph: {REPO / 'configs/graphs/demo.yaml'}\ninputs:\n  gyro: {{sensor: imu}}\nrefresh_hz: fast\n"
    )
    r = _run("validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}:4: refresh_hz: Input should be a valid number" in r.stderr
    assert "found 'fast'" in r.stderr
    r = _run("validate", str(REPO / "configs/actuators/serial.yaml"), "--kind", "actuator:serial")
    assert r.returncode == 0, r.stderr


def test_schema_exports_every_config_model(tmp_path):
    r = _run("schema")
    assert r.returncode == 0, r.stderr
    schemas = json.loads(r.stdout)
    for name in ("launch", "core", "actuator.console", "actuator.serial", "driver.imu"):
        assert name in schemas
    assert "processes" in schemas["launch"]["properties"]
    assert schemas["core"]["required"] == ["graph", "inputs"]
    r = _run("schema", "--out", str(tmp_path), "--only", "core")
    assert r.returncode == 0
    assert json.loads((tmp_path / "core.schema.json").read_text())["$id"] == "spikefuse:core"


def test_demo_in_process():
    r = _run("demo", "--duration", "2")
    assert r.returncode == 0, r.stderr
    m = re.search(r"compute: (\d+) synaptic ops event-driven vs (\d+) for a dense loop", r.stdout)
    assert m and 0 < int(m.group(1)) < 0.1 * int(m.group(2))
    assert re.search(r"camera\s+30 Hz\s+\d+ batches\s+[1-9]\d* events", r.stdout)
    assert "output motors: [" in r.stdout


def test_recorder_and_top_in_a_launch(tmp_path):
    run = tmp_path / "run"
    mcap = tmp_path / "rec.mcap"
    lf = write_yaml(
        tmp_path / "l.yaml",
        {
            "run_dir": str(run),
            "processes": [
                {
                    "name": "imu",
                    "kind": "driver",
                    "type": "imu",
                    "set": ["groups.mag.enabled=false"],
                    "outputs": ["sensor/imu"],
                },
                {
                    "name": "rec",
                    "kind": "record",
                    "args": ["-o", str(mcap), "--endpoint", f"ipc://{run}/imu.sock"],
                    "inputs": ["sensor/imu"],
                },
            ],
        },
    )
    launch = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(lf), "--duration", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # top starts once the driver is up (start-up takes seconds on a loaded machine) and
    # watches long enough for two of the driver's 1 s status messages
    assert wait_until(lambda: (run / "imu.sock").exists(), 60.0, 0.05)
    top = _run(
        "top", "--endpoint", f"ipc://{run}/imu.sock", "--once", "--duration", "4.5", timeout=60
    )
    out, _ = launch.communicate(timeout=60)
    assert launch.returncode == 0, out
    assert re.search(r"rec\s+record\s+stopped\s+0\s+0$", out, re.M), out
    assert mcap.exists() and mcap.stat().st_size > 0
    assert top.returncode == 0, top.stderr
    row = re.search(r"^sensor/imu\s+([\d.]+)\s+([\d.]+)", top.stdout, re.M)
    assert row and float(row.group(1)) > 50, top.stdout
    # the driver's own row: events/s derived from its successive status counters
    proc = re.search(r"^imu\s+ok\s+([\d.]+)", top.stdout, re.M)
    assert proc and float(proc.group(1)) > 0, top.stdout
