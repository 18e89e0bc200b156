"""``spikefuse train CONFIG --collect``: seeded in-process recordings of the simulated robot
(spikefuse.train.closedloop / collect), the teacher's clean label next to a perturbed
executed command, read by the training dataset as a core would see them; end to end
through the CLI on very short runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from spikefuse.protocol import MotorCommand, decode
from spikefuse.recording.mcapio import open_log
from spikefuse.train.closedloop import Perturbation, record_run, sim_driver_config
from spikefuse.train.dataset import load_recording

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "configs/drivers/sim_robot.yaml"
SIZES = {"camera": 48 * 64, "gyro": 3, "accel": 3, "wheels": 2}


def _cfg(seed: int):
    return sim_driver_config(DRIVER, [f"world.seed={seed}", "world.renderer=numpy"])


def _labels(path: Path) -> np.ndarray:
    out = []
    for m in open_log(path).select(["motor/teacher"]):
        msg = decode(m.payload)
        assert isinstance(msg, MotorCommand)
        out.append(msg.values)
    return np.array(out)


def test_recording_is_seeded_labelled_and_read_as_the_core_sees_it(tmp_path):
    pert = Perturbation(yaw_rate_std_radps=0.5, tau_s=0.2)
    a = record_run(tmp_path / "a.mcap", _cfg(3), delay_ms=10, perturbation=pert, max_s=1.5)
    record_run(tmp_path / "b.mcap", _cfg(3), delay_ms=10, perturbation=pert, max_s=1.5)
    clean = record_run(tmp_path / "clean.mcap", _cfg(3), max_s=1.5)
    # the same seed and settings: the same file, byte for byte
    assert (tmp_path / "a.mcap").read_bytes() == (tmp_path / "b.mcap").read_bytes()
    assert a["sim_s"] == clean["sim_s"] == 1.5
    # the teacher labels at its rate (100 Hz); the disturbance moved the robot, so the
    # teacher (reacting to where the robot is) commands something else than in the clean run
    la, lc = _labels(tmp_path / "a.mcap"), _labels(tmp_path / "clean.mcap")
    assert la.shape == lc.shape == (150, 2)
    assert np.abs(la - lc).max() > 0.5
    assert np.abs(np.diff(la[:, 1] - la[:, 0])).max() < 5.0  # labels are the clean rule
    rec = load_recording(tmp_path / "a.mcap", SIZES, "motor/teacher", sampled={"camera"})
    assert rec.n >= 85  # a sample per camera frame (60 Hz), from the first label on
    assert rec.scales == {"camera": 5.0, "gyro": 20.0, "accel": 2.0, "wheels": 100.0}
    cam = rec.inputs["camera"].rows[-1]
    assert cam.min() < -1.0  # the dark line, relative to the floor (DVS state)


CONFIG = """\
collect:
  driver_config: {driver}
  set: [world.randomize.start_pose=true]
  dir: runs
  train_seeds: [1, 2]
  validation_seeds: [3]
  yaw_rate_std_radps: [0.2, 0.0]
  delay_ms: [0, 10]
  max_s: 1.0
  workers: 2
inputs:
  camera: {{shape: [1, 48, 64]}}
  gyro: {{size: 3}}
  accel: {{size: 3}}
  wheels: {{size: 2}}
target: {{topic: motor/teacher}}
network:
  image_input: camera
  image_layers: [{{type: avgpool2d, kernel: [8, 8]}}]
  dense_layers: [{{type: dense, units: 4, activation: tanh}}]
  output_name: wheels_out
fit: {{epochs: 2, batch_size: 32, seed: 1}}
convert: {{lambdas: [0.0], pick: 0.0, steps: 2, window: 10, windows_per_step: 1}}
dense_rates_hz: {{camera: 60, gyro: 1000}}
output: {{graph: out/g.npz, report: out/r.json}}
"""


def test_train_collect_end_to_end_and_missing_runs_name_collect(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(CONFIG.format(driver=DRIVER))

    def cli(*extra):
        return subprocess.run(
            [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "train", str(cfg)]
            + ["--no-progress", *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )

    proc = cli()  # nothing recorded yet
    assert proc.returncode == 2, proc.stderr
    assert "--collect" in proc.stderr and "collect" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("--collect")
    assert proc.returncode == 0, proc.stderr
    for name in ("train_1", "train_2", "validation_3"):
        assert (tmp_path / "runs" / f"{name}.mcap").stat().st_size > 10_000
    rep = json.loads((tmp_path / "out/r.json").read_text())
    assert [Path(r["path"]).name for r in rep["collected_runs"]] == [
        "train_1.mcap",
        "train_2.mcap",
        "validation_3.mcap",
    ]
    # paths relative to the report's folder: a shipped report names no machine's folders
    report_dir = tmp_path / "out"
    assert rep["collected_runs"][0]["path"] == "../runs/train_1.mcap"
    assert rep["train_recordings"] == ["../runs/train_1.mcap", "../runs/train_2.mcap"]
    assert (report_dir / rep["graph"]).is_file() and not Path(rep["graph"]).is_absolute()
    assert rep["engine_check"]["bit_exact"] and rep["engine_check"]["n_values"] > 0
    assert (tmp_path / "out/g.npz").exists()
