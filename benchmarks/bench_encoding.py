"""``spikefuse bench encoding``: what the encoders and the driver SDK cost and save.

Every figure is a ratio against a baseline measured in the same run:

1. sparsity: sigma-delta events (nonzero channel counts) per dense sample value, on the real
   logs (BROAD, VQF, x-io) at the imu driver's default scales, and on BROAD gyro for a sweep
   of scales (quantum from below to above the sensor noise);
2. wire bytes: the EventBatches a driver sends (one per sample) vs the same samples sent
   densely (every channel every sample, same protocol);
3. encoder time per sample vs a plain ``round(k*v)`` of the same values;
4. DVS: events per frame vs pixels per frame on the synthetic moving bar, and the encode
   time per frame vs just resampling + log of the frame;
5. the SDK pipeline (imu driver, synthetic source, no waiting, a counting sender) per
   sample vs the encoder alone;
6. the SDK's per-sample path into a real Publisher (3 channels, each sample sent at once)
   vs a bare ``send_payload`` of the same payloads on the same socket.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from spikefuse.benchmarks._common import BenchResult
from spikefuse.drivers.imu import ImuConfig
from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder, round_half_away
from spikefuse.protocol import EventBatch, encode
from spikefuse.tables import load_table

DESCRIPTION = "sigma-delta/DVS sparsity, bytes and cost vs dense baselines; SDK overhead"
SCALES = {g: float(v["scale"]) for g, v in ImuConfig.default_groups.items()}  # driver defaults
LOGS = {
    "broad": "broad/broad_02_undisturbed_slow_rotation.csv.gz",
    "vqf": "vqf/imu_data.npz",
    "xio": "xio/sensor_data.csv",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="shared data folder")
    p.add_argument("--max-rows", type=int, default=20000, help="rows per log (0: all)")
    p.add_argument("--quick", action="store_true", help="fewer rows and frames")


def _data_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    raise SystemExit("shared data not found: give --data ../shared/data")


def _sigma_delta(values: np.ndarray, k: float) -> tuple[int, int, int, float, float]:
    """(n_events, sparse bytes, dense bytes, encode s, baseline s) over all rows."""
    enc = SigmaDeltaEncoder(values.shape[1], k)
    n_events = sparse_bytes = dense_bytes = 0
    all_ch = np.arange(values.shape[1], dtype=np.int32)
    t0 = time.perf_counter()
    for row in values:
        ch, cnt = enc.encode(row)
        n_events += ch.size
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row in values:
        round_half_away(k * row)
    t_base = time.perf_counter() - t0
    enc.reset()
    start = max(0, (len(values) - 5000) // 2)  # the middle 5000 rows (encoding bytes is slow)
    for row in values[:start]:
        enc.encode(row)
    for i, row in enumerate(values[start : start + 5000]):
        ch, cnt = enc.encode(row)
        if ch.size:
            sparse_bytes += len(encode(EventBatch("imu", i, i, "g", k, ch, cnt)))
        dense = np.nan_to_num(round_half_away(k * row)).astype(np.int32)
        dense_bytes += len(encode(EventBatch("imu", i, i, "g", k, all_ch, dense)))
    return n_events, sparse_bytes, dense_bytes, t_enc, t_base


def _imu_rows(res: BenchResult, data: Path, max_rows: int) -> None:
    for log, rel in LOGS.items():
        table = load_table(data / rel)
        for group, k in SCALES.items():
            v = table.groups[group][: max_rows or None]
            n_ev, sb, db, t_enc, t_base = _sigma_delta(v, k)
            dense = v.size
            res.add(f"{log}/{group} events per dense value", n_ev / dense, 1.0, n_ev / dense)
            res.add(f"{log}/{group} wire bytes vs dense", sb, db, sb / db)
            res.add(
                f"{log}/{group} encode s/sample vs round(k*v)",
                t_enc / len(v),
                t_base / len(v),
                t_enc / t_base,
            )
            res.fields[f"{log}.{group}"] = {
                "n_samples": int(len(v)),
                "events_per_dense_value": n_ev / dense,
                "wire_bytes_ratio": sb / db,
                "encode_time_ratio": t_enc / t_base,
            }


def _scale_sweep(res: BenchResult, data: Path, max_rows: int) -> None:
    """Resolution vs sparsity on BROAD gyro: events per dense value for quanta from below
    to above the sample-to-sample variation s = median over axes of std(diff)/sqrt(2)."""
    v = load_table(data / LOGS["broad"]).groups["gyro"][: max_rows or None]
    noise = float(np.median(np.std(np.diff(v, axis=0), axis=0)) / np.sqrt(2))
    sweep = {}
    for k in (50.0, 100.0, 200.0, 500.0, 1000.0):
        enc = SigmaDeltaEncoder(3, k)
        n_ev = sum(enc.encode(row)[0].size for row in v)
        quantum_over_noise = (1.0 / k) / noise
        res.add(
            f"broad/gyro k={k:g} (quantum = {quantum_over_noise:.2g} s) events/value",
            n_ev / v.size,
            1.0,
            n_ev / v.size,
        )
        sweep[str(k)] = {
            "quantum_over_noise": quantum_over_noise,
            "events_per_dense_value": n_ev / v.size,
        }
    res.fields["broad.gyro.scale_sweep"] = sweep


def _dvs_rows(res: BenchResult, n_frames: int) -> None:
    from types import SimpleNamespace

    from spikefuse.drivers.frames import MovingBar

    w, h = 128, 96
    scene = MovingBar(
        w, h, SimpleNamespace(seed=0, speed_px_s=40.0, bar_width_px=8.0, render_scale=2)
    )
    frames = [scene.render(k / 30) for k in range(n_frames)]
    enc = DvsEncoder(w, h, threshold=0.2)
    n_events = 0
    t0 = time.perf_counter()
    for k, f in enumerate(frames):
        n_events += enc.encode(k * 33_333_333, f, 33_333_333)[0].size
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in frames:
        enc.log_intensity(f)
    t_base = time.perf_counter() - t0
    per_frame = n_events / (n_frames - 1)
    res.add("dvs events per frame vs pixels", per_frame, w * h, per_frame / (w * h))
    res.add(
        "dvs encode s/frame vs resample+log", t_enc / n_frames, t_base / n_frames, t_enc / t_base
    )
    res.fields["dvs"] = {
        "events_per_pixel_frame": per_frame / (w * h),
        "encode_time_ratio": t_enc / t_base,
    }


def _sdk_row(res: BenchResult, seconds: float) -> None:
    from spikefuse.drivers.imu import IMU
    from spikefuse.drivers.motion import SyntheticMotion
    from spikefuse.sdk import load_driver_config, run_driver

    class Counter:
        n = 0

        def send(self, msg) -> bool:
            self.n += 1
            return True

    cfg = load_driver_config(IMU, None, ["source.realtime=false", f"duration_s={seconds}"])
    t0 = time.perf_counter()
    run_driver(IMU, cfg, sender=Counter())
    t_sdk = time.perf_counter() - t0
    n = round(seconds * (1000 + 200 + 20))
    motion = SyntheticMotion(0)
    encs = {g: SigmaDeltaEncoder(3, k) for g, k in SCALES.items()}
    rows = [(g, motion.sample(g, i * 1_000_000)) for i in range(n) for g in ("gyro",)]
    t0 = time.perf_counter()
    for g, v in rows:
        motion.sample(g, 0)
        encs[g].encode(v)
    t_base = time.perf_counter() - t0
    res.add("sdk pipeline s/sample vs signal+encode", t_sdk / n, t_base / n, t_sdk / t_base)
    res.fields["sdk"] = {
        "samples": n,
        "pipeline_time_ratio": t_sdk / t_base,
        "samples_per_s": n / t_sdk,
    }


def _sdk_vs_publisher_row(res: BenchResult, n: int) -> None:
    """The SDK's per-sample path (a 3-channel sample in, an EventBatch sent at once on a real
    Publisher: encode, batch, number, pack, send) against a bare ``send_payload`` of the
    same payloads on the same socket (issue 13: the SDK's overhead over the transport)."""
    import tempfile

    from spikefuse.sdk import DriverConfig, Sample
    from spikefuse.sdk.runner import Runner
    from spikefuse.sdk.timing import StopSignal
    from spikefuse.transport.endpoint import Endpoint
    from spikefuse.transport.publisher import Publisher

    class _Cfg(DriverConfig):
        default_groups = {"gyro": {"scale": 1000.0}}

    cfg = _Cfg(name="bench", max_batch_latency_ms=0.0, heartbeat_period_s=3600.0)
    values = np.random.default_rng(0).normal(0, 1, (n, 3))
    with (
        tempfile.TemporaryDirectory(prefix="sfenc") as tmp,
        Publisher(Endpoint.ipc(tmp, "sdk")) as pub,
    ):
        runner = Runner(cfg, lambda c, x: iter(()), pub, StopSignal())
        runner.service(time.monotonic_ns())  # the start-up heartbeat, not a sample
        t0 = time.perf_counter()
        for i in range(n):
            runner.handle(Sample("gyro", 1_000_000 * i, values[i]))
        t_sdk = time.perf_counter() - t0
        stream = runner.streams["gyro"]
        batch = EventBatch("bench", 0, 0, "gyro", 1000.0, *stream.encoder.encode(values[0] + 5))
        payload, topic = encode(batch), b"sensor/bench"
        t0 = time.perf_counter()
        for _ in range(n):
            pub.send_payload(topic, payload)
        t_pub = time.perf_counter() - t0
    per_sdk, per_pub = t_sdk / n, t_pub / n
    res.add(
        "sdk sample -> Publisher s/msg vs bare send_payload", per_sdk, per_pub, per_sdk / per_pub
    )
    res.fields["sdk"]["us_per_sample_to_publisher"] = round(per_sdk * 1e6, 2)
    res.fields["sdk"]["bare_publisher_us_per_msg"] = round(per_pub * 1e6, 2)
    res.fields["sdk"]["us_over_bare_publisher"] = round((per_sdk - per_pub) * 1e6, 2)


def run(args: argparse.Namespace) -> BenchResult:
    res = BenchResult(
        "encoders and driver SDK (ratios against baselines measured in this run)",
        header=("measure", "value", "baseline", "ratio"),
    )
    max_rows = 3000 if args.quick else args.max_rows
    data = _data_dir(args.data)
    _imu_rows(res, data, max_rows)
    _scale_sweep(res, data, max_rows)
    _dvs_rows(res, 30 if args.quick else 150)
    _sdk_row(res, 1.0 if args.quick else 5.0)
    _sdk_vs_publisher_row(res, 5_000 if args.quick else 50_000)
    res.notes.append(
        "data: BROAD (Laidig et al. 2021, CC BY 4.0), VQF test log (MIT), x-io Fusion example (MIT)"
    )
    return res
