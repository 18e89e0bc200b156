"""``spikefuse bench bus``: the wire protocol and the ZeroMQ bus, each against a baseline
measured in the same run.

1. Throughput: events/s from a driver *process* to a subscriber process over ipc, batches of
   64..1024 events (encoded per send, decoded per receive), next to the same frames moved
   by raw pyzmq PUB/SUB with no encoding or decoding (the transport floor).
2. Latency: one hop (half a round trip through a child process that decodes and re-sends)
   of a small EventBatch through Publisher/Subscriber, next to a raw pyzmq ping-pong of the
   same frames and byte sizes through a raw echo child (the floor), alternating ping by ping.
3. Encoder fidelity on real IMU data (BROAD trial 02, x-io example log; ../shared/data):
   sigma-delta events/s and reconstruction error at three scales (the noise-matched default
   ``DEFAULT_SCALES`` x0.5 / x1 / x2; x0.5 = a quantum twice as large) against sending every
   raw sample (every channel of every row); the IMU driver's current default scales are
   reported as a fourth row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spikefuse.benchmarks._common import BenchResult
from spikefuse.drivers.imu import ImuConfig
from spikefuse.protocol import EventBatch, Status, encode, topic_of
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.raw import RawSocket
from spikefuse.transport.subscriber import Subscriber

DESCRIPTION = "bus events/s and one-hop latency vs raw pyzmq; IMU encoder events/s vs RMSE"

DEFAULT_SCALES = {g: float(v["scale"]) for g, v in ImuConfig.default_groups.items()}
"""The imu driver's default scales (counts per rad/s, per m/s², per µT), noise-matched: one
quantum (0.05 rad/s, 0.5 m/s², 1 µT) is about 4x the largest per-axis sample-to-sample noise
sigma of the BROAD IMU (0.011 rad/s, 0.085 m/s², 0.24 µT), rounded up to a 1-2-5 step."""
DRIVER_SCALES = {"gyro": 500.0, "accel": 50.0, "mag": 2.0}
"""Fine scales (25x finer than the default), reported for reference: quanta below the noise."""
SCALE_FACTORS = (0.5, 1.0, 2.0)
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "broad": ("broad/broad_02_undisturbed_slow_rotation.csv.gz", "broad"),
    "xio": ("xio/sensor_data.csv", "xio"),
}
CHILD_TIMEOUT_S = 120.0
BACKOFF_S = 100e-6
"""A throughput child's pause when the subscriber's queue is full (both methods alike)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="shorter runs (a few seconds total)")
    p.add_argument(
        "--batch-sizes", default="64,256,1024", help="events per batch (comma separated)"
    )
    p.add_argument(
        "--duration-s", type=float, default=2.0, help="seconds per throughput measurement"
    )
    p.add_argument("--n-pings", type=int, default=4000, help="round trips per latency method")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the shared recordings")
    p.add_argument("--skip-imu", action="store_true", help="skip the encoder fidelity part")


# --------------------------------------------------------------------------- children


def _batch(n: int, seq: int = 0) -> EventBatch:
    rng = np.random.default_rng(n)
    return EventBatch(
        "bench", seq, time.monotonic_ns(), "x", 100.0,
        rng.integers(0, 4096, n).astype(np.int32),
        rng.integers(-3, 4, n).astype(np.int32),
    )  # fmt: skip


def _child_throughput(endpoint: str, mode: str, batch_size: int, duration_s: float) -> None:
    """Publish batches for ``duration_s``, retrying when the subscriber is full (so the
    measure is the sustained rate, not how fast we can drop), then a final Status."""
    batch = _batch(batch_size)
    if mode == "ours":
        with Publisher(endpoint, hwm=1000) as pub:
            if not pub.wait_for_subscribers(1, 30.0):
                sys.exit("no subscriber")
            start_ns = time.monotonic_ns()
            end_ns = start_ns + int(duration_s * 1e9)
            seq = 0
            while time.monotonic_ns() < end_ns:
                batch.seq = seq
                if pub.send(batch):
                    seq += 1
                else:  # the subscriber is full: back off instead of spinning on its cores
                    time.sleep(BACKOFF_S)
            sent_s = (time.monotonic_ns() - start_ns) / 1e9
            while not pub.send(Status("bench", 0, 0, {"n_batches": seq, "sent_s": sent_s})):
                pass
            sys.stdin.read()  # keep the socket open until the parent has everything
        return
    frames = (topic_of(batch), encode(batch))
    done = (b"status/bench", encode(Status("bench", 0, 0, {})))
    with RawSocket("pub", endpoint, bind=True, hwm=1000) as raw:
        if not raw.wait_for_subscribers(1, 30.0):
            sys.exit("no subscriber")
        end_ns = time.monotonic_ns() + int(duration_s * 1e9)
        while time.monotonic_ns() < end_ns:
            if not raw.send(frames):
                time.sleep(BACKOFF_S)
        while not raw.send(done):
            pass
        sys.stdin.read()


def _child_echo(mode: str, endpoint_in: str, endpoint_out: str) -> None:
    """Echo, blocking on the input socket: ``ours`` decodes and re-sends through the
    Publisher; ``raw`` re-sends the frames as they are. Stops on a ``status/`` message."""
    if mode == "ours":
        with Subscriber(endpoint_in, hwm=100000) as sub, Publisher(endpoint_out) as pub:
            if not pub.wait_for_subscribers(1, 30.0):
                sys.exit("no subscriber")
            while True:
                msg = sub.recv(None)
                pub.send(msg)
                if isinstance(msg, Status):
                    return
    with (
        RawSocket("sub", endpoint_in, bind=False, hwm=100000) as rsub,
        RawSocket("pub", endpoint_out, bind=True) as rpub,
    ):
        if not rpub.wait_for_subscribers(1, 30.0):
            sys.exit("no subscriber")
        while True:
            frames = rsub.recv(None)
            rpub.send(frames)
            if frames[0].startswith(b"status/"):
                return


def _spawn(*args: str) -> subprocess.Popen:
    """A child process; it exits when its stdin is closed (see :func:`_finish`). It runs
    in the temporary directory: ``-m`` puts the working directory first on ``sys.path``, and
    from a repository checkout that would be the uncompiled source tree, not the installed
    package the parent runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "spikefuse.benchmarks.bench_bus", *args],
        stdin=subprocess.PIPE,
        cwd=tempfile.gettempdir(),
    )


def _finish(child: subprocess.Popen) -> None:
    child.stdin.close()
    try:
        child.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise RuntimeError("benchmark child did not exit") from None
    if child.returncode != 0:
        raise RuntimeError(f"benchmark child failed with exit status {child.returncode}")


# --------------------------------------------------------------------------- throughput


def _throughput_ours(run_dir: Path, batch_size: int, duration_s: float) -> float:
    ep = Endpoint.ipc(run_dir, f"tp-ours-{batch_size}")
    with Subscriber(ep, hwm=1000, max_queue=1 << 30) as sub:
        child = _spawn("--child", "throughput", ep, "ours", str(batch_size), str(duration_s))
        try:
            n_events, t_first, t_last = 0, None, None
            deadline_s = time.monotonic() + duration_s + CHILD_TIMEOUT_S
            while time.monotonic() < deadline_s:
                msgs = sub.recv_many(1.0)
                if not msgs:
                    continue
                now = time.perf_counter()
                t_first = t_first if t_first is not None else now
                t_last = now
                if isinstance(msgs[-1], Status):
                    n_events += sum(m.n_events for m in msgs[:-1])
                    sent_s = float(msgs[-1].metrics["sent_s"])
                    break
                n_events += sum(m.n_events for m in msgs)
            else:
                raise RuntimeError("throughput child never finished")
        finally:
            _finish(child)
    st = sub.stats
    if st.n_rejected or st.n_seq_missing:
        raise RuntimeError(f"lost messages in the throughput run: {st}")
    # the receiver's window, or the sender's when a busy machine kept the receiver from
    # reading until everything had arrived (one read: no window at all)
    return n_events / max(t_last - t_first, sent_s)


def _throughput_raw(run_dir: Path, batch_size: int, duration_s: float) -> float:
    ep = Endpoint.ipc(run_dir, f"tp-raw-{batch_size}")
    with RawSocket("sub", ep, bind=False, hwm=1000) as sub:
        child = _spawn("--child", "throughput", ep, "raw", str(batch_size), str(duration_s))
        try:
            n_msgs, t_first = 0, None
            while True:
                frames = sub.recv(duration_s + CHILD_TIMEOUT_S)
                if frames is None:
                    raise RuntimeError("raw throughput child never finished")
                now = time.perf_counter()
                t_first = t_first if t_first is not None else now
                if frames[0] == b"status/bench":
                    break
                n_msgs += 1
        finally:
            _finish(child)
    return n_msgs * batch_size / (now - t_first)


# --------------------------------------------------------------------------- latency


def _latency(run_dir: Path, n_pings: int, n_events: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One-hop times (ns, = round trip / 2) for ours and the raw floor, alternating."""
    eps = [Endpoint.ipc(run_dir, n) for n in ("l-oi", "l-oo", "l-ri", "l-ro")]
    batch = _batch(n_events)
    frames = [topic_of(batch), encode(batch)]
    ours, raw = [], []
    with (
        Publisher(eps[0], hwm=100000) as pub,
        Subscriber(eps[1], hwm=100000) as sub,
        RawSocket("pub", eps[2], bind=True) as rpub,
        RawSocket("sub", eps[3], bind=False) as rsub,
    ):
        children = [_spawn("--child", "echo", "ours", *eps[:2])]
        children.append(_spawn("--child", "echo", "raw", *eps[2:]))
        try:
            if not (pub.wait_for_subscribers(1, 60.0) and rpub.wait_for_subscribers(1, 60.0)):
                raise RuntimeError("echo child did not subscribe")
            _warm_up(pub, sub, rpub, rsub, batch, frames)
            for _ in range(n_pings):  # alternate every ping: both see the same machine load
                t0 = time.perf_counter_ns()
                pub.send(batch)
                got = sub.recv(5.0)
                t1 = time.perf_counter_ns()
                rpub.send(frames)
                got_raw = rsub.recv(5.0)
                t2 = time.perf_counter_ns()
                if got is None or got_raw is None:
                    raise RuntimeError("an echo child lost a message")
                ours.append(t1 - t0)
                raw.append(t2 - t1)
            pub.send(Status("bench", 0, 0, {}))
            rpub.send([b"status/bench", encode(Status("bench", 0, 0, {}))])
        finally:
            for child in children:
                _finish(child)
    return np.array(ours) / 2, np.array(raw) / 2, len(frames[1])


def _warm_up(pub, sub, rpub, rsub, batch, frames) -> None:
    deadline_s = time.monotonic() + 30.0
    while sub.recv(0.05) is None:  # until the return path is connected too
        pub.send(batch)
        if time.monotonic() > deadline_s:
            raise RuntimeError("echo child does not answer")
    while sub.recv(0.2) is not None:
        pass
    for _ in range(200):
        pub.send(batch)
        sub.recv(5.0)
    while rsub.recv(0.05) is None:
        rpub.send(frames)
        if time.monotonic() > deadline_s:
            raise RuntimeError("echo child does not answer (raw)")
    while rsub.recv(0.2) is not None:
        pass
    for _ in range(200):
        rpub.send(frames)
        rsub.recv(5.0)


# --------------------------------------------------------------------------- fidelity


def imu_fidelity(table, factor: float, scales: dict[str, float] = DEFAULT_SCALES) -> dict:
    """Sigma-delta encode every row of an IMU table (gyro, accel, mag) at ``factor`` x
    ``scales``; returns events/s, raw samples/s and the error of what a receiver
    reconstructs after each sample (SI RMSE per group, and in quanta)."""
    from spikefuse.encoding import SigmaDeltaEncoder

    duration_s = (table.t_ns[-1] - table.t_ns[0]) / 1e9
    out = {"n_rows": len(table), "duration_s": duration_s, "factor": factor, "groups": {}}
    n_events_total, n_values_total, sq_quanta, max_quanta = 0, 0, 0.0, 0.0
    for name, scale0 in scales.items():
        values = table.groups[name]
        scale = scale0 * factor
        enc = SigmaDeltaEncoder(values.shape[1], scale)
        recon = np.empty_like(values)
        n_events = 0
        for i, row in enumerate(values):
            channels, _ = enc.encode(row)
            n_events += len(channels)
            recon[i] = enc.sent
        finite = np.isfinite(values)
        err_quanta = recon[finite] - scale * values[finite]  # recon holds counts here
        out["groups"][name] = {
            "scale": scale,
            "events_per_s": n_events / duration_s,
            "raw_samples_per_s": values.size / duration_s,
            "rmse_si": float(np.sqrt(np.mean((err_quanta / scale) ** 2))),
            "max_abs_error_quanta": float(np.abs(err_quanta).max()),
        }
        n_events_total += n_events
        n_values_total += values.size
        sq_quanta += float(np.sum(err_quanta**2))
        max_quanta = max(max_quanta, float(np.abs(err_quanta).max()))
    out["events_per_s"] = n_events_total / duration_s
    out["raw_samples_per_s"] = n_values_total / duration_s
    out["rmse_quanta"] = float(np.sqrt(sq_quanta / n_values_total))
    out["max_abs_error_quanta"] = max_quanta
    return out


# --------------------------------------------------------------------------- run


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) / 1000.0


def run(args: argparse.Namespace) -> BenchResult:
    sizes = [int(s) for s in str(args.batch_sizes).split(",") if s.strip()]
    duration_s = 0.5 if args.quick else args.duration_s
    n_pings = min(args.n_pings, 800) if args.quick else args.n_pings
    res = BenchResult(
        "spikefuse bench bus", header=("measure", "value", "baseline", "ratio", "note")
    )
    f = res.fields
    with tempfile.TemporaryDirectory(prefix="sfbus") as tmp:
        run_dir = Path(tmp)
        by_batch = {}
        for n in sizes:
            ours = _throughput_ours(run_dir, n, duration_s)
            raw = _throughput_raw(run_dir, n, duration_s)
            by_batch[str(n)] = {"events_per_s": ours, "raw_events_per_s": raw}
            res.add(f"events/s, batch {n}", ours, raw, ours / raw, "raw pyzmq, no codec")
        f["events_per_s"] = min(v["events_per_s"] for v in by_batch.values())
        f["events_per_s_by_batch"] = by_batch
        hop, floor, n_bytes = _latency(run_dir, n_pings, 3)
    f["hop_p50_us"], f["hop_p99_us"] = _pct(hop, 50), _pct(hop, 99)
    f["floor_p50_us"], f["floor_p99_us"] = _pct(floor, 50), _pct(floor, 99)
    f["hop_p50_vs_floor"] = f["hop_p50_us"] / f["floor_p50_us"]
    f["latency_payload_bytes"] = n_bytes
    f["n_pings"] = len(hop)
    res.add(
        "one hop p50 us",
        f["hop_p50_us"],
        f["floor_p50_us"],
        f["hop_p50_vs_floor"],
        f"{n_bytes} B payload",
    )
    res.add(
        "one hop p99 us",
        f["hop_p99_us"],
        f["floor_p99_us"],
        f["hop_p99_us"] / f["floor_p99_us"],
        "raw ping-pong",
    )
    if not args.skip_imu:
        _fidelity_rows(res, Path(args.data_dir))
    res.notes.append(
        "throughput: child process -> this process over ipc; ratio = ours / raw pyzmq PUB/SUB "
        "of the same pre-encoded frames. latency: half round trip through an echo child, "
        "alternating ping by ping; floor = raw pyzmq frames of the same size through a raw echo child."
    )
    res.notes.append(
        "imu: events = nonzero (channel, count) pairs; raw samples = every channel of every "
        "row; error = receiver's sum/scale - value after each row (quanta = 1/scale). "
        "Data: BROAD (Laidig et al. 2021, CC BY 4.0), x-io Fusion example (MIT)."
    )
    return res


def _fidelity_rows(res: BenchResult, data_dir: Path) -> None:
    from spikefuse.tables import load_table

    f = res.fields
    f["imu"] = {}
    for ds, (rel, preset) in DATASETS.items():
        table = load_table(data_dir / rel, preset=preset)
        f["imu"][ds] = {}
        runs = [(f"x{factor:g}", factor, DEFAULT_SCALES) for factor in SCALE_FACTORS]
        runs.append(("driver_default", 1.0, DRIVER_SCALES))
        for key, factor, scales in runs:
            r = imu_fidelity(table, factor, scales)
            f["imu"][ds][key] = r
            label = f"scale x{factor:g}" if scales is DEFAULT_SCALES else "fine scales 500/50/2"
            res.add(
                f"{ds} imu events/s, {label}",
                r["events_per_s"],
                r["raw_samples_per_s"],
                r["events_per_s"] / r["raw_samples_per_s"],
                f"rmse {r['rmse_quanta']:.3f} q, max {r['max_abs_error_quanta']:.3f} q; "
                + ", ".join(f"{g} {v['rmse_si']:.2g}" for g, v in r["groups"].items()),
            )
    broad = f["imu"]["broad"]["x1"]
    f["imu_default_scales"] = dict(DEFAULT_SCALES)
    f["imu_events_per_s_at_default_threshold"] = broad["events_per_s"]
    f["imu_raw_samples_per_s"] = broad["raw_samples_per_s"]
    f["imu_events_vs_raw"] = broad["events_per_s"] / broad["raw_samples_per_s"]
    f["imu_reconstruction_rmse"] = broad["rmse_quanta"]  # in quanta (1/scale) of each channel
    f["imu_reconstruction_max_abs_quanta"] = broad["max_abs_error_quanta"]
    f["imu_reconstruction_rmse_si"] = {g: v["rmse_si"] for g, v in broad["groups"].items()}


def _main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "--child":
        if argv[1] == "throughput":
            _child_throughput(argv[2], argv[3], int(argv[4]), float(argv[5]))
        elif argv[1] == "echo":
            _child_echo(*argv[2:5])
        else:
            sys.exit(f"unknown child mode {argv[1]!r}")
        return
    ns = argparse.Namespace(
        quick=True, batch_sizes="64,256,1024", duration_s=1.0, n_pings=800,
        data_dir=DATA_DIR, skip_imu=False,
    )  # fmt: skip
    print(json.dumps(run(ns).fields, indent=2))


if __name__ == "__main__":
    _main(sys.argv[1:])
