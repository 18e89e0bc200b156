"""Small recordings for the training tests, written with the project's own writer and
encoders from a known target function.

A 1×12×16 camera sees a bright vertical bar moving sideways (DVS events through
:class:`DvsEncoder`, 60 Hz), a gyro measures the bar's angular rate (sigma-delta counts
through :class:`SigmaDeltaEncoder`, 400 Hz), and a "teacher" commands two wheels from the
true state (50 Hz): steer towards the bar, damp with the rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.protocol import EventBatch, MotorCommand, encode
from spikefuse.recording.mcapio import LogWriter

H, W = 12, 16
CAM_HZ, GYRO_HZ, CMD_HZ = 60, 400, 50
DVS_THRESHOLD = 0.1
GYRO_SCALE = 50.0


def bar_position(t_s: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.3, 0.7, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    return (
        7.5
        + 3.0 * np.sin(2 * np.pi * f[0] * t_s + ph[0])
        + 1.5 * np.sin(2 * np.pi * f[1] * t_s + ph[1])
    )


def teacher(p: np.ndarray, rate: np.ndarray) -> np.ndarray:
    e = (p - 7.5) / 4.0
    return np.stack([1.0 + 0.5 * e - 0.1 * rate, 1.0 - 0.5 * e + 0.1 * rate], axis=-1)


def write_log(path: Path, seed: int, duration_s: float = 4.0) -> Path:
    rng = np.random.default_rng(seed + 1000)
    dt = 1e-4
    t = np.arange(0.0, duration_s, dt)
    p = bar_position(t, seed)
    rate = np.gradient(p, dt)
    msgs: list[tuple[int, str, bytes, int]] = []
    t0_ns = 1_000_000_000
    dvs = DvsEncoder(W, H, threshold=DVS_THRESHOLD)
    gyro = SigmaDeltaEncoder(1, GYRO_SCALE)
    xs = np.arange(W)
    seqs = {"cam": 0, "gyro": 0, "cmd": 0}
    interval_ns = round(1e9 / CAM_HZ)
    for i in range(int(duration_s * CAM_HZ)):
        k = int(i / CAM_HZ / dt)
        img = 0.1 + 0.9 * np.exp(-((xs - p[k]) ** 2) / (2 * 1.5**2))
        frame = np.repeat(img[None, :], H, axis=0) * (1 + 0.01 * rng.normal(size=(H, W)))
        t_ns = t0_ns + k * 100_000
        ch, co, dts = dvs.encode(t_ns, frame, interval_ns)
        if ch.size:
            b = EventBatch(
                "cam",
                seqs["cam"],
                t_ns - interval_ns,
                "camera",
                1 / DVS_THRESHOLD,
                ch,
                co,
                dt_ns=dts,
            )
            seqs["cam"] += 1
            msgs.append((t_ns, "sensor/cam", encode(b), b.seq))
    for i in range(int(duration_s * GYRO_HZ)):
        k = int(i / GYRO_HZ / dt)
        t_ns = t0_ns + k * 100_000
        ch, co = gyro.encode(np.array([rate[k] + 0.05 * rng.normal()]))
        if ch.size:
            b = EventBatch("imu", seqs["gyro"], t_ns, "gyro", GYRO_SCALE, ch, co)
            seqs["gyro"] += 1
            msgs.append((t_ns, "sensor/imu", encode(b), b.seq))
    for i in range(int(duration_s * CMD_HZ)):
        k = int(i / CMD_HZ / dt)
        t_ns = t0_ns + k * 100_000
        m = MotorCommand("wheels", seqs["cmd"], t_ns, t_ns, teacher(p[k], rate[k]))
        seqs["cmd"] += 1
        msgs.append((t_ns, "motor/wheels", encode(m), m.seq))
    msgs.sort(key=lambda m: m[0])
    with LogWriter(path, flush_interval_s=None) as w:
        for t_ns, topic, payload, seq in msgs:
            w.write(topic, payload, t_ns, t_ns, seq)
    return path


CONFIG = """\
train: [rec_0.mcap, rec_1.mcap, rec_2.mcap]
validation: [rec_val.mcap]
inputs:
  camera: {{shape: [1, {h}, {w}]}}
  gyro: {{size: 1}}
target: {{topic: motor/wheels}}
network:
  image_input: camera
  image_layers:
    - {{type: avgpool2d, kernel: [2, 2]}}
    - {{type: conv2d, channels: 3, kernel: [3, 3], stride: [1, 2], activation: relu}}
  vector_inputs: [gyro]
  dense_layers:
    - {{type: dense, units: 12, activation: tanh}}
  output_name: wheels
fit: {{epochs: {epochs}, batch_size: 128, learning_rate: 0.01, sample_every: 2, seed: 3}}
convert:
  lambdas: [0.0, 0.05, 1.0]
  pick: 0.05
  steps: {steps}
  window: 48
  windows_per_step: 2
dense_rates_hz: {{camera: {cam}, gyro: {gyro}}}
output: {{graph: out/learned.npz, report: out/report.json, curve_png: out/curve.png}}
"""


def make_dataset(folder: Path, epochs: int = 8, steps: int = 40) -> Path:
    for i in range(3):
        write_log(folder / f"rec_{i}.mcap", seed=i)
    write_log(folder / "rec_val.mcap", seed=99)
    cfg = folder / "train.yaml"
    cfg.write_text(CONFIG.format(h=H, w=W, epochs=epochs, steps=steps, cam=CAM_HZ, gyro=GYRO_HZ))
    return cfg
