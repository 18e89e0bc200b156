"""``spikefuse bench latency``: end-to-end latency, driver acquisition -> MotorCommand
receipt at the actuator process, over ipc, against the raw two-hop pyzmq floor and
fixed-rate fusion loops, plus compute and idle CPU.

1. Event-driven: this process plays the driver (EventBatch ``t_ns`` = acquisition time on
   CLOCK_MONOTONIC, one batch per ms) at 1k, 10k and 100k events/s into a real
   ``spikefuse core`` child process (graph: 64 inputs -> dense 64x8 relu -> 8 outputs); a
   real ``spikefuse actuator console`` child writes every command it receives to CSV with
   its receipt time. Latency = receipt - ``cause_t_ns`` (commands carrying a new cause).
2. Floor: the same two hops without fusion: this process -> a raw pyzmq relay process ->
   the console actuator (MotorCommands stamped at send).
3. Fixed-rate loops: the same 10k events/s stream processed by a frame-based loop
   (DenseExecutor) ticking at 30 Hz and 1 kHz: latency = wait for the next tick + the
   measured compute of a tick + the measured transport floor; compute = ops per tick x rate.
   Compute is compared on the demo stream (gyro 1 kHz, accel 200 Hz, camera 30 Hz DVS).
4. Idle: CPU of the core process with static sensors (no events) over a few seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from spikefuse.benchmarks._common import BenchResult

DESCRIPTION = "end-to-end latency driver -> core -> actuator vs pyzmq floor and fixed-rate loops"
RATES = (1_000, 10_000, 100_000)
N_IN, N_OUT = 64, 8
BATCH_PERIOD_NS = 1_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=3.0, help="per rate (default 3)")
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)


# --------------------------------------------------------------------------- setup


def bench_graph(seed: int):
    from spikefuse.graph import Graph

    rng = np.random.default_rng(seed)
    g = Graph("latency")
    g.input("x", N_IN, scale=1.0)
    g.dense(
        "h",
        "x",
        rng.normal(0, 0.3, (N_IN, N_OUT)),
        bias=np.full(N_OUT, 2.0),
        activation="relu",
        scale=20.0,
    )
    g.output("y", "h", scale=20.0)
    return g


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    f = log.open("w")
    return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _actuator(run: Path, csv: Path, core: str) -> subprocess.Popen:
    cfg = run / f"act-{csv.stem}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "motors",
                "core": core,
                "run_dir": str(run),
                "n_channels": N_OUT,
                "csv": str(csv),
                "print_hz": 0,
                "deadman_ms": 1000,
            }
        )
    )
    return _spawn(
        [sys.executable, "-m", "spikefuse", "actuator", "console", "--config", str(cfg)],
        run / f"act-{csv.stem}.log",
    )


def _latencies_us(csv: Path) -> np.ndarray:
    if not csv.exists():
        return np.zeros(0)
    rows = [ln.split(",") for ln in csv.read_text().splitlines()[1:]]
    rows = [r for r in rows if len(r) > 4 and r[1] == "cmd"]
    seen, out = set(), []
    for r in rows:
        cause = int(r[3])
        if cause in seen:
            continue  # a refresh repeats its cause
        seen.add(cause)
        out.append((int(r[0]) - cause) / 1e3)
    return np.asarray(out)


# --------------------------------------------------------------------------- senders


def _paced(seconds: float, period_ns: int):
    """Monotonic deadlines every ``period_ns`` for ``seconds`` (never drifting)."""
    t = time.monotonic_ns()
    end = t + round(seconds * 1e9)
    while t < end:
        now = time.monotonic_ns()
        if now < t:
            time.sleep((t - now) / 1e9)
        yield t
        t += period_ns


def _send_events(pub, rate: int, seconds: float, rng) -> int:
    from spikefuse.protocol import EventBatch

    per_batch = max(1, rate * BATCH_PERIOD_NS // 1_000_000_000)
    seq = 0
    for _ in _paced(seconds, BATCH_PERIOD_NS):
        ch = rng.integers(0, N_IN, per_batch).astype(np.int32)
        co = rng.choice(np.array([-1, 1], np.int32), per_batch)
        pub.send(EventBatch("bench", seq, time.monotonic_ns(), "x", 1.0, ch, co))
        seq += 1
    return seq


def _send_floor(pub, seconds: float) -> None:
    from spikefuse.protocol import MotorCommand

    values = np.zeros(N_OUT)
    for seq, _ in enumerate(_paced(seconds, BATCH_PERIOD_NS)):
        now = time.monotonic_ns()
        values[0] = seq
        pub.send(MotorCommand("motors", seq, now, now, values))


def relay_main(sub_ep: str, pub_ep: str) -> None:
    """The floor's middle hop: forward raw frames, no decoding (run as a child)."""
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sub_ep)
    pub = ctx.socket(zmq.PUB)
    pub.bind(pub_ep)
    try:
        while True:
            pub.send_multipart(sub.recv_multipart())
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- measures


def measure_e2e(run: Path, seconds: float, seed: int) -> dict[int, np.ndarray]:
    from spikefuse.bus import Publisher

    bench_graph(seed).save(run / "g.npz")
    core_cfg = run / "core.yaml"
    core_cfg.write_text(
        yaml.safe_dump(
            {
                "graph": str(run / "g.npz"),
                "run_dir": str(run),
                "inputs": {"x": {"sensor": "bench", "timeout_s": 60}},
                "actuators": {"motors": {"output": "y"}},
            }
        )
    )
    rng = np.random.default_rng(seed)
    out = {}
    for rate in RATES:
        csv = run / f"e2e-{rate}.csv"
        with Publisher(f"ipc://{run}/bench.sock", hwm=1_000_000) as pub:
            core = _spawn(
                [sys.executable, "-m", "spikefuse", "core", "--config", str(core_cfg)],
                run / f"core-{rate}.log",
            )
            act = _actuator(run, csv, "core")
            try:
                if not pub.wait_for_subscribers(1, 30.0):
                    raise RuntimeError("core did not subscribe")
                _wait_rows(csv, 30.0)  # the actuator got the core's first command
                _send_events(pub, rate, seconds, rng)
                time.sleep(0.3)
            finally:
                _stop(core)
                _stop(act)
        out[rate] = _latencies_us(csv)
    return out


def _wait_rows(csv: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) > 2:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no command reached the actuator ({csv})")


def measure_floor(run: Path, seconds: float) -> np.ndarray:
    from spikefuse.bus import Publisher

    csv = run / "floor.csv"
    with Publisher(f"ipc://{run}/floor-in.sock", hwm=1_000_000) as pub:
        relay = _spawn(
            [
                sys.executable,
                "-m",
                "spikefuse.benchmarks.bench_latency",
                "relay",
                f"ipc://{run}/floor-in.sock",
                f"ipc://{run}/relay.sock",
            ],
            run / "relay.log",
        )
        act = _actuator(run, csv, "relay")
        try:
            if not pub.wait_for_subscribers(1, 30.0):
                raise RuntimeError("relay did not subscribe")
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and len(_latencies_us(csv)) < 3:
                _send_floor(pub, 0.05)
            _send_floor(pub, seconds)
            time.sleep(0.3)
        finally:
            _stop(relay)
            _stop(act)
    return _latencies_us(csv)[3:]


def fixed_rate_loop(
    seed: int, rate_hz: float, seconds: float, floor_mean_us: float
) -> tuple[float, float]:
    """(mean latency us, ops/s) of a frame loop at ``rate_hz`` on the 10k events/s stream."""
    from spikefuse.engine.dense import DenseExecutor

    ex = DenseExecutor(bench_graph(seed))
    rng = np.random.default_rng(seed)
    x = np.zeros(N_IN)
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        np.add.at(x, rng.integers(0, N_IN, 10), rng.choice([-1.0, 1.0], 10))
        ex.step(1.0 / rate_hz, {"x": x})
    step_us = (time.perf_counter() - t0) / n * 1e6
    period_ns = round(1e9 / rate_hz)
    t_ev = np.arange(0, round(seconds * 1e9), BATCH_PERIOD_NS)  # batch acquisition times
    wait_ns = (-t_ev) % period_ns  # until the next tick
    mean_us = float(np.mean(wait_ns)) / 1e3 + step_us + floor_mean_us
    return mean_us, ex.ops_per_step * rate_hz


def demo_compute(seconds: float) -> tuple[float, float]:
    """(event-driven syn ops/s, dense 1 kHz loop ops/s) on the demo stream."""
    from spikefuse.core.demo import build_demo_graph, synthetic_stream
    from spikefuse.engine import Engine
    from spikefuse.engine.dense import DenseExecutor

    g = build_demo_graph()
    eng = Engine(g)
    eng.start(0)
    for b in synthetic_stream(seconds):
        eng.push(b.t_ns, b.input, b.channels, b.counts)
    eng.advance(round(seconds * 1e9))
    return eng.counters["syn_ops"] / seconds, DenseExecutor(g).ops_per_step * 1000.0


def measure_idle(run: Path, seconds: float) -> float:
    from spikefuse.core.demo import write_demo_graph

    gdir = run / "graphs"
    write_demo_graph(gdir)
    cfg = run / "idle.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "idle",
                "graph": str(gdir / "demo.yaml"),
                "run_dir": str(run),
                "inputs": {
                    "gyro": {"sensor": "still", "timeout_s": 3600},
                    "accel": {"sensor": "still", "timeout_s": 3600},
                },
                "actuators": {"motors": {"output": "motors"}},
            }
        )
    )
    core = _spawn(
        [sys.executable, "-m", "spikefuse", "core", "--config", str(cfg)], run / "idle.log"
    )
    try:
        time.sleep(2.0)  # imports and start-up
        c0, t0 = _cpu_s(core.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = _cpu_s(core.pid), time.monotonic()
    finally:
        _stop(core)
    return 100.0 * (c1 - c0) / (t1 - t0)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="sfbench") as tmp:
        run_dir = Path(tmp)
        floor = measure_floor(run_dir, args.seconds)
        e2e = measure_e2e(run_dir, args.seconds, args.seed)
        idle = measure_idle(run_dir, args.idle_seconds)
    floor_mean = float(np.mean(floor))
    loop30_lat, loop30_ops = fixed_rate_loop(args.seed, 30.0, args.seconds, floor_mean)
    loop1k_lat, loop1k_ops = fixed_rate_loop(args.seed, 1000.0, args.seconds, floor_mean)
    ev_ops, dense1k_ops = demo_compute(5.0)
    lat10k = e2e[10_000]
    res = BenchResult(
        "End-to-end latency: driver t_ns -> MotorCommand at the actuator (ipc, 2 hops)",
        header=("measure", "n", "p50 us", "p99 us", "max us", "mean us"),
    )
    res.add("raw pyzmq 2-hop floor", len(floor), *_stats(floor))
    for rate in RATES:
        res.add(f"event-driven @ {rate // 1000}k ev/s", len(e2e[rate]), *_stats(e2e[rate]))
    res.add("fixed-rate loop 30 Hz (model)", "-", "-", "-", "-", loop30_lat)
    res.add("fixed-rate loop 1 kHz (model)", "-", "-", "-", "-", loop1k_lat)
    mean10k = float(np.mean(lat10k))
    res.notes += [
        f"mean latency ratio event-driven(10k) / 30 Hz loop: {mean10k / loop30_lat:.4f} "
        f"({loop30_lat / mean10k:.0f}x lower); vs 1 kHz loop: {mean10k / loop1k_lat:.3f}",
        f"compute on the demo stream: event-driven {ev_ops:.3g} syn ops/s vs 1 kHz dense loop "
        f"{dense1k_ops:.3g} ops/s = {ev_ops / dense1k_ops:.4f}x (bench graph loops: 30 Hz "
        f"{loop30_ops:.3g}, 1 kHz {loop1k_ops:.3g} ops/s)",
        f"idle core CPU (static sensors, 20 Hz refresh): {idle:.3f} %",
    ]
    res.fields = {
        "p50_us_10k": _r(np.percentile(lat10k, 50)),
        "p99_us_10k": _r(np.percentile(lat10k, 99)),
        "max_us_10k": _r(np.max(lat10k)),
        "floor_p50_us": _r(np.percentile(floor, 50)),
        "mean_latency_ratio_vs_30hz_loop": round(mean10k / loop30_lat, 5),
        "compute_ratio_vs_1khz_loop": round(ev_ops / dense1k_ops, 5),
        "idle_cpu_percent": round(idle, 3),
        "p50_ratio_vs_floor_10k": round(
            float(np.percentile(lat10k, 50) / np.percentile(floor, 50)), 3
        ),
        "p50_us_1k": _r(np.percentile(e2e[1_000], 50)),
        "p99_us_1k": _r(np.percentile(e2e[1_000], 99)),
        "p50_us_100k": _r(np.percentile(e2e[100_000], 50)),
        "p99_us_100k": _r(np.percentile(e2e[100_000], 99)),
        "max_us_100k": _r(np.max(e2e[100_000])),
        "floor_p99_us": _r(np.percentile(floor, 99)),
        "mean_us_10k": round(mean10k, 1),
        "loop_30hz_mean_latency_us": round(loop30_lat, 1),
        "loop_1khz_mean_latency_us": round(loop1k_lat, 1),
        "n_commands_10k": int(lat10k.size),
    }
    return res


def _stats(a: np.ndarray) -> tuple[float, float, float, float]:
    if not a.size:
        return (float("nan"),) * 4
    return (
        float(np.percentile(a, 50)),
        float(np.percentile(a, 99)),
        float(a.max()),
        float(a.mean()),
    )


def _r(v: float) -> float:
    return round(float(v), 1)


if __name__ == "__main__":  # the floor's relay child
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        relay_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m spikefuse.benchmarks.bench_latency relay SUB_EP PUB_EP")
