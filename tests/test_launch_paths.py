"""Paths in a launch file follow the launch file, including a driver file named in
``type:`` (real launcher, real driver and recorder processes); errors name the line and
the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _core_util import LineReader, stop, wait_until

from spikefuse.protocol import EventBatch, decode
from spikefuse.recording.mcapio import open_log

DRIVER = """
from spikefuse.sdk import DriverConfig, driver


class RampConfig(DriverConfig):
    default_groups = {"level": {"scale": 10.0, "rate_hz": 200.0}}
    name: str = "ramp"


@driver("ramp", RampConfig)
def RAMP(cfg, ctx):
    yield from ctx.poll({"level": lambda t_ns: [t_ns / 1e8]})
"""

LAUNCH = """\
name: paths
run_dir: run
processes:
  - name: ramp
    kind: driver
    type: {type}
    outputs: [sensor/ramp]
  - name: rec
    kind: record
    args: [-o, {out}, --endpoint, "ipc://{run}/ramp.sock", --flush-interval, "0.1"]
    inputs: [sensor/ramp]
"""


def _robot(tmp_path: Path, type_: str) -> tuple[Path, Path]:
    robot = tmp_path / "robot"
    (robot / "drivers").mkdir(parents=True, exist_ok=True)
    (robot / "drivers" / "ramp.py").write_text(DRIVER)
    out = tmp_path / "ramp.mcap"
    lf = robot / "l.yaml"
    lf.write_text(LAUNCH.format(type=type_, out=out, run=robot / "run"))
    return lf, out


def _n_batches(out: Path) -> int:
    return len(open_log(out).messages) if out.exists() else 0


def _run(lf: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "spikefuse", "launch", str(lf), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_driver_file_in_type_resolves_against_the_launch_file(tmp_path: Path) -> None:
    lf, out = _robot(tmp_path, "drivers/ramp.py:RAMP")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(lf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=elsewhere,
    )
    reader = LineReader(proc)
    try:
        assert wait_until(lambda: _n_batches(out) >= 10, 60, 0.1), reader.text()
    finally:
        stop(proc, 30)
    reader.wait_for(lambda ln: "summary:" in ln, 10)
    assert proc.returncode == 0, reader.text()
    assert str(lf.parent / "drivers" / "ramp.py") + ":RAMP" in reader.text()
    batches = [b for m in open_log(out).messages if isinstance(b := decode(m.payload), EventBatch)]
    assert batches and {(b.sensor, b.input) for b in batches} == {("ramp", "level")}


def test_children_import_the_installed_package_not_a_folder_next_to_the_launch_file(
    tmp_path: Path,
) -> None:
    """A launch file in a source checkout: its processes run in its folder, where a
    ``spikefuse`` folder must not shadow the installed package."""
    lf, out = _robot(tmp_path, "drivers/ramp.py:RAMP")
    trap = lf.parent / "spikefuse"
    trap.mkdir()
    (trap / "__init__.py").write_text('raise SystemExit("imported the folder next to it")\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(lf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    reader = LineReader(proc)
    try:
        assert wait_until(lambda: _n_batches(out) >= 10, 60, 0.1), reader.text()
    finally:
        stop(proc, 30)
    reader.wait_for(lambda ln: "summary:" in ln, 10)
    assert "imported the folder next to it" not in reader.text()


def test_missing_driver_file_names_the_type_line(tmp_path: Path) -> None:
    lf, _ = _robot(tmp_path, "drivers/nope.py:RAMP")
    r = _run(lf, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{lf}:6: processes[0].type" in r.stderr, r.stderr
    assert str(lf.parent / "drivers" / "nope.py") in r.stderr
    lf, _ = _robot(tmp_path, "drivers/ramp.py:NOT_THERE")
    r = _run(lf, tmp_path)
    assert r.returncode == 2 and f"{lf}:6: processes[0].type" in r.stderr, r.stderr
