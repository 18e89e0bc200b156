"""``spikefuse bench latency``: end-to-end latency, driver acquisition -> MotorCommand
receipt at the actuator process, over ipc, against the raw two-hop pyzmq floor and real
fixed-rate fusion loops, plus compute and idle CPU.

1. Event-driven: this process plays the driver (EventBatch ``t_ns`` = acquisition time on
   CLOCK_MONOTONIC, one batch per ms) at 1k, 10k and 100k events/s into a real
   ``spikefuse core`` child process (graph: 64 inputs -> dense 64x8 relu -> 8 outputs); a
   real ``spikefuse actuator console`` child writes every command it receives to CSV with
   its receipt time. Latency = receipt - ``cause_t_ns`` (commands carrying a new cause).
2. Floor: the same two hops without fusion: this process -> a raw pyzmq relay process ->
   the console actuator (MotorCommands stamped at send).
3. Fixed-rate loops, run for real with the same hop count: the same 10k events/s stream
   (same batches) into a loop child process that drains it continuously, wakes on monotonic
   deadlines at 30 Hz / 1 kHz, evaluates the graph densely (DenseExecutor) every tick and
   publishes a MotorCommand (cause = newest batch included) to the same console actuator.
   Mean latency is compared per *batch* for both (receipt of the first command whose cause
   is at or after the batch), so a batch that waited for a tick counts its wait. Compute =
   ops/s counted by each (engine synaptic ops vs ops per dense tick x ticks); the headline
   compute ratio is on the demo stream (gyro 1 kHz, accel 200 Hz, camera 30 Hz DVS).
4. Idle: CPU time of every thread of a core process with static sensors (no events, 20 Hz
   motor refresh, 1 Hz status) over wall time, from /proc/<pid>/task/*/schedstat (ns).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from spikefuse.benchmarks._common import BenchResult
from spikefuse.errors import ConfigError

DESCRIPTION = "end-to-end latency driver -> core -> actuator vs pyzmq floor and fixed-rate loops"
RATES = (1_000, 10_000, 100_000)
N_IN, N_OUT = 64, 8
BATCH_PERIOD_NS = 1_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=3.0, help="per rate (default 3)")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="how long the idle core is watched for its CPU use (default 5)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed of the benchmark graph and streams"
    )
    p.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        help="run this process and the children (not the idle core) under SCHED_FIFO at this "
        "priority (1-99; needs CAP_SYS_NICE): shows how much is scheduling (default 0: off)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds of floor, core chain (10k ev/s), SDK chain and zenoh, each "
        "--round-seconds long: the *_median ratios are the medians of the per-round ratios, "
        "so a load change between chains moves no ratio (default 5; 0: off)",
    )
    p.add_argument("--round-seconds", type=float, default=1.5, help="per chain in a round")
    p.add_argument(
        "--no-pinned",
        action="store_true",
        help="skip the floor and SDK chains pinned to one CPU (fields *_1cpu; always skipped "
        "with --rt-priority)",
    )


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


def _spawn(argv: list[str], log: Path, rt_priority: int = 0) -> subprocess.Popen:
    """Start a ``python -m spikefuse...`` child in the run directory: ``-m`` puts the
    child's working directory first on ``sys.path``, so from a repository checkout the
    child would import the uncompiled source tree instead of the installed package the
    parent runs (issue 9)."""
    if rt_priority:
        argv = ["chrt", "--fifo", str(rt_priority), *argv]
    with log.open("w") as f:
        return subprocess.Popen(
            argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _actuator(
    run: Path,
    csv: Path,
    core: str,
    rt_priority: int = 0,
    n_channels: int = N_OUT,
    endpoint: str | None = None,
) -> subprocess.Popen:
    cfg = run / f"act-{csv.stem}.yaml"
    data = {
        "name": "motors",
        "core": core,
        "run_dir": str(run),
        "n_channels": n_channels,
        "csv": str(csv),
        "print_hz": 0,
        "deadman_ms": 1000,
    }
    if endpoint is not None:  # else the core's default, ipc://<run_dir>/<core>.sock
        data["endpoint"] = endpoint
    cfg.write_text(yaml.safe_dump(data))
    return _spawn(
        [sys.executable, "-m", "spikefuse", "actuator", "console", "--config", str(cfg)],
        run / f"act-{csv.stem}.log",
        rt_priority,
    )


def _commands(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(receipt t_ns, cause_t_ns) of every applied command (``cmd`` rows) in the CSV."""
    if not csv.exists():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = [ln.split(",", 4) for ln in csv.read_text().splitlines()[1:]]
    rows = [r for r in rows if len(r) > 4 and r[1] == "cmd"]
    t = np.array([int(r[0]) for r in rows], np.int64)
    cause = np.array([int(r[3]) for r in rows], np.int64)
    return t, cause


def _latencies_us(csv: Path) -> np.ndarray:
    """Latency of every command that carries a new cause (a refresh repeats its cause)."""
    t, cause = _commands(csv)
    _, first = np.unique(cause, return_index=True)
    first.sort()
    return (t[first] - cause[first]) / 1e3


def per_batch_latency_us(sent_t_ns: np.ndarray, t_ns: np.ndarray, cause_ns: np.ndarray):
    """Latency of every sent batch: receipt of the first command whose cause is at or after
    the batch's acquisition time (commands in receipt order). Returns (latencies us, number
    of batches no command ever reflected)."""
    if not t_ns.size:
        return np.zeros(0), int(sent_t_ns.size)
    newest = np.maximum.accumulate(cause_ns)
    i = np.searchsorted(newest, sent_t_ns, side="left")
    ok = i < t_ns.size
    return (t_ns[i[ok]] - sent_t_ns[ok]) / 1e3, int((~ok).sum())


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


def make_stream(rate: int, seconds: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (channels, counts) of every batch, one batch per ms (identical for every run
    with the same arguments, so the core and the loops see the same stream)."""
    per_batch = max(1, rate * BATCH_PERIOD_NS // 1_000_000_000)
    n = round(seconds * 1e9 / BATCH_PERIOD_NS)
    rng = np.random.default_rng([seed, rate])
    ch = rng.integers(0, N_IN, (n, per_batch)).astype(np.int32)
    co = rng.choice(np.array([-1, 1], np.int32), (n, per_batch))
    return list(zip(ch, co, strict=True))


def _send_events(pub, stream) -> np.ndarray:
    """Send the stream paced at one batch per ms; returns each batch's acquisition t_ns."""
    from spikefuse.protocol import EventBatch

    sent = np.zeros(len(stream), np.int64)
    for seq, ((ch, co), _) in enumerate(zip(stream, _paced(1e3, BATCH_PERIOD_NS), strict=False)):
        t_ns = time.monotonic_ns()
        pub.send(EventBatch("bench", seq, t_ns, "x", 1.0, ch, co))
        sent[seq] = t_ns
    return sent


def _send_floor(pub, seconds: float) -> int:
    from spikefuse.protocol import MotorCommand

    values = np.zeros(N_OUT)
    n = 0
    for seq, _ in enumerate(_paced(seconds, BATCH_PERIOD_NS)):
        now = time.monotonic_ns()
        values[0] = seq
        pub.send(MotorCommand("motors", seq, now, now, values))
        n += 1
    return n


def relay_main(sub_ep: str, pub_ep: str) -> None:
    """The floor's middle hop: forward raw frames, no decoding (run as a child)."""
    from spikefuse.transport.raw import RawSocket

    with RawSocket("sub", sub_ep, bind=False) as sub, RawSocket("pub", pub_ep, bind=True) as pub:
        try:
            while True:
                pub.send(sub.recv())
        except KeyboardInterrupt:
            pass


def unix_relay_main(sub_ep: str, pub_ep: str) -> None:
    """The floor's middle hop on ``unix://`` (RawSocket is ZeroMQ only): the same raw
    forwarding through a Subscriber's ``recv_frames`` and a Publisher's ``send_payload``."""
    from spikefuse.transport.publisher import Publisher
    from spikefuse.transport.subscriber import Subscriber

    with Subscriber(sub_ep) as sub, Publisher(pub_ep) as pub:
        try:
            while True:
                for topic, payload in sub.recv_frames(None):
                    pub.send_payload(topic, payload)
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------- the frame loop


class FrameLoop:
    """The fixed-rate baseline: accumulate every EventBatch into the input vector as it
    arrives, and on each monotonic tick evaluate the whole graph (DenseExecutor) and
    publish the outputs, caused by the newest batch included."""

    def __init__(self, graph_path: Path, rate_hz: float, input_name: str = "x"):
        from spikefuse.engine.dense import DenseExecutor
        from spikefuse.graph import Graph

        self.ex = DenseExecutor(Graph.load(graph_path))
        self.input_name = input_name
        self.output_name = self.ex.output_names[0]
        self.x = np.zeros(self.ex.nodes[input_name].size)
        self.period_ns = round(1e9 / rate_hz)
        self.cause_t_ns = time.monotonic_ns()
        self.n_ticks = 0
        self.n_missed_ticks = 0
        self.n_batches = 0
        self.busy_ns = 0

    def take(self, msgs) -> None:
        from spikefuse.protocol import EventBatch

        for m in msgs:
            if isinstance(m, EventBatch) and m.input == self.input_name:
                np.add.at(self.x, m.channels, m.counts / m.scale)
                self.cause_t_ns = max(self.cause_t_ns, m.t_ns)
                self.n_batches += 1

    def wait_tick(self, sub, tick_ns: int) -> None:
        """Drain the stream until the tick: zmq waits (ms resolution) while more than 2 ms
        remain, then a precise sleep, then whatever arrived meanwhile."""
        while (rem_ns := tick_ns - time.monotonic_ns()) > 0:
            if rem_ns > 2_000_000:
                self.take(sub.recv_many((rem_ns - 1_000_000) / 1e9))
            else:
                time.sleep(rem_ns / 1e9)
        self.take(sub.recv_many(0))

    def tick(self, pub, seq: int) -> None:
        from spikefuse.protocol import MotorCommand

        t0 = time.monotonic_ns()
        self.ex.step(self.period_ns / 1e9, {self.input_name: self.x})
        values = self.ex.output_value(self.output_name)
        now = time.monotonic_ns()
        pub.send(MotorCommand("motors", seq, now, self.cause_t_ns, values))
        self.busy_ns += time.monotonic_ns() - t0
        self.n_ticks += 1

    def run(self, sub, pub, stop) -> float:
        """Tick until ``stop``; returns the elapsed seconds."""
        start = time.monotonic_ns()
        tick_ns = start + self.period_ns
        while not stop.requested:
            self.wait_tick(sub, tick_ns)
            self.tick(pub, self.n_ticks)
            tick_ns += self.period_ns
            late = (time.monotonic_ns() - tick_ns) // self.period_ns
            if late >= 0:  # overran whole periods: skip them (counted), keep the grid
                self.n_missed_ticks += late + 1
                tick_ns += (late + 1) * self.period_ns
        return (time.monotonic_ns() - start) / 1e9

    def stats(self, elapsed_s: float) -> dict[str, float]:
        return {
            "n_ticks": self.n_ticks,
            "n_missed_ticks": self.n_missed_ticks,
            "n_batches": self.n_batches,
            "elapsed_s": elapsed_s,
            "ops_per_tick": self.ex.ops_per_step,
            "syn_ops": self.ex.syn_ops,
            "busy_s": self.busy_ns / 1e9,
        }


def loop_main(sub_ep: str, pub_ep: str, rate_hz: str, graph: str, stats_json: str) -> None:
    """The fixed-rate loop child: runs until SIGTERM, then writes its stats as JSON."""
    from spikefuse.sdk.timing import StopSignal
    from spikefuse.transport.publisher import Publisher
    from spikefuse.transport.subscriber import Subscriber

    loop = FrameLoop(Path(graph), float(rate_hz))
    with (
        StopSignal() as stop,
        Subscriber(sub_ep, ["sensor/bench"], hwm=1_000_000, max_queue=1_000_000) as sub,
        Publisher(pub_ep) as pub,
    ):
        elapsed_s = loop.run(sub, pub, stop)
    Path(stats_json).write_text(json.dumps(loop.stats(elapsed_s)))


# --------------------------------------------------------------------------- measures


@dataclass
class Run:
    """One stream through one fusion process to the actuator."""

    lat_us: np.ndarray  # per command with a new cause
    batch_lat_us: np.ndarray  # per batch sent
    n_unreflected: int  # batches no command reflected
    ops_per_s: float
    cpu_us_per_batch: float  # CPU of the fusion process (all threads) per batch sent
    extra: dict[str, float] = field(default_factory=dict)


def _write_core_config(run: Path, seed: int) -> Path:
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
    return core_cfg


def _drive(
    run: Path, tag: str, fusion_argv: list[str], endpoint_name: str, stream, rt_priority: int
) -> tuple:
    """Start the fusion process and an actuator on its endpoint, send ``stream``; returns
    (sent t_ns, command receipts, causes, CPU us of the fusion process per batch)."""
    from spikefuse.transport.publisher import Publisher

    csv = run / f"{tag}.csv"
    with Publisher(f"ipc://{run}/bench.sock", hwm=1_000_000) as pub:
        fusion = _spawn(fusion_argv, run / f"{tag}.log", rt_priority)
        act = _actuator(run, csv, endpoint_name, rt_priority)
        try:
            if not pub.wait_for_subscribers(1, 30.0):
                raise RuntimeError(f"{tag}: the fusion process did not subscribe")
            _wait_rows(csv, 30.0)  # the actuator got the first command
            cpu0 = cpu_ns(fusion.pid)
            sent = _send_events(pub, stream)
            time.sleep(0.3)
            cpu_us = (cpu_ns(fusion.pid) - cpu0) / 1e3 / len(stream)
        finally:
            _stop(fusion)
            _stop(act)
    t, cause = _commands(csv)
    keep = t >= sent[0]  # commands before the stream are start-up
    return sent, t[keep], cause[keep], cpu_us


def measure_e2e(
    run: Path, seconds: float, seed: int, rt_priority: int = 0, rates: tuple[int, ...] = RATES
) -> dict[int, Run]:
    core_cfg = _write_core_config(run, seed)
    out = {}
    for rate in rates:
        argv = [sys.executable, "-m", "spikefuse", "core", "--config", str(core_cfg)]
        stream = make_stream(rate, seconds, seed)
        sent, t, cause, cpu_us = _drive(run, f"e2e-{rate}", argv, "core", stream, rt_priority)
        batch_lat, n_unref = per_batch_latency_us(sent, t, cause)
        m = re.search(r"(\d+) synaptic ops", (run / f"e2e-{rate}.log").read_text())
        span_s = (sent[-1] - sent[0]) / 1e9 + BATCH_PERIOD_NS / 1e9
        ops = int(m.group(1)) / span_s if m else float("nan")
        _, first = np.unique(cause, return_index=True)
        first.sort()
        out[rate] = Run((t[first] - cause[first]) / 1e3, batch_lat, n_unref, ops, cpu_us)
    return out


def measure_loop(run: Path, rate_hz: float, seconds: float, seed: int, rt_priority: int = 0) -> Run:
    tag = f"loop{rate_hz:g}hz"
    stats = run / f"{tag}.json"
    if not (run / "g.npz").exists():
        bench_graph(seed).save(run / "g.npz")
    argv = [
        sys.executable,
        "-m",
        "spikefuse.benchmarks.bench_latency",
        "loop",
        f"ipc://{run}/bench.sock",
        f"ipc://{run}/{tag}.sock",
        str(rate_hz),
        str(run / "g.npz"),
        str(stats),
    ]
    stream = make_stream(10_000, seconds, seed)
    sent, t, cause, cpu_us = _drive(run, tag, argv, tag, stream, rt_priority)
    batch_lat, n_unref = per_batch_latency_us(sent, t, cause)
    st = json.loads(stats.read_text()) if stats.exists() else {}
    ops = st["syn_ops"] / st["elapsed_s"] if st else float("nan")
    _, first = np.unique(cause, return_index=True)
    first.sort()
    return Run((t[first] - cause[first]) / 1e3, batch_lat, n_unref, ops, cpu_us, st)


def _wait_rows(csv: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) > 2:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no command reached the actuator ({csv})")


def measure_floor(
    run: Path, seconds: float, rt_priority: int = 0, scheme: str = "ipc"
) -> tuple[np.ndarray, float]:
    """(latencies us, CPU us of the relay process per message); ``scheme`` ``unix``: the
    same two hops on ``unix://`` (the relay through Subscriber/Publisher, no decoding)."""
    from spikefuse.transport.publisher import Publisher

    tag = "" if scheme == "ipc" else f"-{scheme}"
    csv = run / f"floor{tag}.csv"
    relay_out = f"{scheme}://{run}/relay{tag}.sock"
    with Publisher(f"{scheme}://{run}/floor-in{tag}.sock", hwm=1_000_000) as pub:
        relay = _spawn(
            [
                sys.executable,
                "-m",
                "spikefuse.benchmarks.bench_latency",
                "relay" if scheme == "ipc" else "urelay",
                f"{scheme}://{run}/floor-in{tag}.sock",
                relay_out,
            ],
            run / f"relay{tag}.log",
            rt_priority,
        )
        act = _actuator(
            run, csv, "relay", rt_priority, endpoint=None if scheme == "ipc" else relay_out
        )
        try:
            if not pub.wait_for_subscribers(1, 30.0):
                raise RuntimeError("relay did not subscribe")
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and len(_latencies_us(csv)) < 3:
                _send_floor(pub, 0.05)
            cpu0 = cpu_ns(relay.pid)
            n_sent = _send_floor(pub, seconds)
            time.sleep(0.3)
            cpu_us = (cpu_ns(relay.pid) - cpu0) / 1e3 / max(n_sent, 1)
        finally:
            _stop(relay)
            _stop(act)
    return _latencies_us(csv)[3:], cpu_us


# --------------------------------------------------------------------------- SDK and zenoh

SDK_RATE_HZ = 1000.0
SDK_WARMUP_S = 0.5
N_SDK = 3


SDK_SCHEMES = ("ipc", "unix")
"""The SDK chain's two hops: ZeroMQ ipc (the default endpoints) or spikefuse's unix://."""


def _sdk_endpoint(run: Path, scheme: str, name: str) -> str | None:
    """The chain's endpoint ``name`` on ``scheme`` (None: the configs' default, ipc)."""
    return None if scheme == "ipc" else f"unix://{run}/{name}.sock"


def _write_sdk_configs(run: Path, seconds: float, scheme: str = "ipc") -> tuple[Path, Path]:
    """A real ``spikefuse driver imu`` (synthetic gyro only, 3 channels at 1 kHz, every
    sample sent at once) and a core with a 3 -> 3 pass-through graph, on ``scheme``."""
    from spikefuse.graph import Graph

    sensor_ep = _sdk_endpoint(run, scheme, "u-imu")
    core_ep = _sdk_endpoint(run, scheme, "u-sdkcore")
    driver_extra = {"endpoint": sensor_ep} if sensor_ep else {}
    input_extra = {"endpoint": sensor_ep} if sensor_ep else {}
    core_extra = {"endpoint": core_ep} if core_ep else {}

    scale = 1000.0  # one count = 1 mrad/s: the synthetic gyro's noise changes every sample
    g = Graph("passthrough")
    g.input("gyro", N_SDK, scale=scale)
    g.output("y", "gyro", scale=scale)
    g.save(run / "g3.npz")
    driver = run / "sdk-imu.yaml"
    driver.write_text(
        yaml.safe_dump(
            {
                "name": "imu",
                "run_dir": str(run),
                "max_batch_latency_ms": 0.0,
                "wait_for_subscribers": 1,
                "wait_for_subscribers_timeout_s": 30.0,
                "duration_s": seconds + SDK_WARMUP_S,
                "groups": {
                    "gyro": {"scale": scale, "rate_hz": SDK_RATE_HZ},
                    "accel": {"enabled": False},
                    "mag": {"enabled": False},
                },
                "source": {"type": "synthetic", "seed": 0},
                **driver_extra,
            }
        )
    )
    core = run / "sdkcore.yaml"
    core.write_text(
        yaml.safe_dump(
            {
                "name": "sdkcore",
                "graph": str(run / "g3.npz"),
                "run_dir": str(run),
                "inputs": {"gyro": {"sensor": "imu", "timeout_s": 60, **input_extra}},
                "actuators": {"motors": {"output": "y"}},
                **core_extra,
            }
        )
    )
    return driver, core


def measure_sdk(run: Path, seconds: float, rt_priority: int = 0, scheme: str = "ipc") -> np.ndarray:
    """Latencies (us) of a real SDK driver process -> ``spikefuse core`` (3 -> 3
    pass-through) -> the console actuator: sample time to command receipt, two hops, both
    on ``scheme`` (ZeroMQ ``ipc`` or spikefuse's ``unix``)."""
    if scheme not in SDK_SCHEMES:
        raise ConfigError(f"SDK chain scheme must be one of {SDK_SCHEMES}, found {scheme!r}")
    if scheme != "ipc":  # its own files (the same names; a stale CSV would count)
        run = run / f"sdk-{scheme}"
        run.mkdir(exist_ok=True)
    driver_cfg, core_cfg = _write_sdk_configs(run, seconds, scheme)
    csv = run / "sdk.csv"
    core = _spawn(
        [sys.executable, "-m", "spikefuse", "core", "--config", str(core_cfg)],
        run / "sdkcore.log",
        rt_priority,
    )
    core_ep = _sdk_endpoint(run, scheme, "u-sdkcore")
    act = _actuator(run, csv, "sdkcore", rt_priority, n_channels=N_SDK, endpoint=core_ep)
    try:
        _wait_started(run / ("sdkcore.sock" if core_ep is None else "u-sdkcore.sock"), 30.0)
        drv = _spawn(
            [sys.executable, "-m", "spikefuse", "driver", "imu", "--config", str(driver_cfg)],
            run / "sdk-imu.log",
            rt_priority,
        )
        try:
            drv.wait(seconds + SDK_WARMUP_S + 60.0)
        finally:
            _stop(drv)
        time.sleep(0.3)  # the last commands on their way
    finally:
        _stop(core)
        _stop(act)
    t, cause = _commands(csv)
    if not t.size:
        raise RuntimeError(f"no command reached the actuator ({csv}; see {run}/sdkcore.log)")
    keep = cause >= cause.min() + round(SDK_WARMUP_S * 1e9)
    t, cause = t[keep], cause[keep]
    _, first = np.unique(cause, return_index=True)
    first.sort()
    return (t[first] - cause[first]) / 1e3


@contextlib.contextmanager
def _affinity(cpus: set[int]):
    """This process (and every child started inside: they inherit it) on ``cpus``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure_pinned(
    run: Path, seconds: float, rt_priority: int = 0
) -> tuple[int, np.ndarray, np.ndarray]:
    """(the CPU, floor latencies, SDK chain latencies) with all three processes of each
    chain on one CPU (the launch file's ``cpu: [n]`` for every process)."""
    cpu = max(os.sched_getaffinity(0))
    sub = run / "pinned"  # fresh files: a warm-up check must not see the unpinned run's CSV
    sub.mkdir(exist_ok=True)
    with _affinity({cpu}):
        floor, _ = measure_floor(sub, seconds, rt_priority)
        sdk = measure_sdk(sub, seconds, rt_priority)
    return cpu, floor, sdk


def zenoh_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("zenoh") is not None


def _zenoh_session(listen: list[str], connect: list[str]):
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    conf.insert_json5("listen/endpoints", json.dumps(listen))
    conf.insert_json5("connect/endpoints", json.dumps(connect))
    return zenoh.open(conf)


def _zenoh_publisher(session, key: str):
    import zenoh

    # express: no batching (zenoh's lowest-latency setting); DROP like a full ZeroMQ queue
    # (BLOCK waits by spinning: under SCHED_FIFO it starved the receiver it waited for)
    return session.declare_publisher(
        key, congestion_control=zenoh.CongestionControl.DROP, express=True
    )


class _ZenohSender:
    """``send(msg)`` like the floor's Publisher: encode, then put on the zenoh publisher."""

    def __init__(self, pub) -> None:
        from spikefuse.protocol import Encoder

        self.pub = pub
        self.encoder = Encoder()

    def send(self, msg) -> bool:
        self.pub.put(self.encoder.encode(msg))
        return True


def zenoh_relay_main(listen_ep: str) -> None:
    """The zenoh chain's middle hop (a child): forwards ``sf/bench/in`` to ``sf/bench/out``
    (no decoding) until killed."""
    session = _zenoh_session([listen_ep], [])
    sub = session.declare_subscriber("sf/bench/in")
    pub = _zenoh_publisher(session, "sf/bench/out")
    while True:
        pub.put(sub.recv().payload)


def zenoh_recv_main(connect_ep: str, out: str) -> None:
    """The zenoh chain's receiver (a child) does per message what the console actuator
    does, in its order: decode the MotorCommand, stamp the receipt, write a CSV row
    (line-buffered); until the payload ``END``. ``out``.ready appears at the first message."""
    from spikefuse.protocol import decode

    session = _zenoh_session([], [connect_ep])
    sub = session.declare_subscriber("sf/bench/out")
    ready = Path(out + ".ready")
    n = 0
    with open(out, "w", encoding="utf-8", buffering=1) as f:
        f.write("t_ns,cause_t_ns,values\n")
        while True:
            payload = sub.recv().payload.to_bytes()
            if payload == b"END":
                break
            cmd = decode(payload)
            now = time.monotonic_ns()  # decoded first, as the console actuator stamps
            f.write(f"{now},{cmd.cause_t_ns},{','.join(map(str, cmd.values.tolist()))}\n")
            n += 1
            if n == 1:
                ready.touch()
    session.close()


def measure_zenoh(run: Path, seconds: float, rt_priority: int = 0) -> np.ndarray:
    """Latencies (us) of the floor's messages over a zenoh two-hop chain (this process ->
    a relay process -> a receiver process; unix sockets, peer mode, express publishers)."""
    ep = f"unixsock-stream/{run}/zenoh-relay.sock"
    out = str(run / "zenoh.csv")
    me = [sys.executable, "-m", "spikefuse.benchmarks.bench_latency"]
    relay = _spawn([*me, "zrelay", ep], run / "zrelay.log", rt_priority)
    recv = None
    session = None
    try:
        _wait_started(Path(f"{run}/zenoh-relay.sock"), 30.0)
        recv = _spawn([*me, "zrecv", ep, out], run / "zrecv.log", rt_priority)
        session = _zenoh_session([], [ep])
        zpub = _zenoh_publisher(session, "sf/bench/in")
        pub = _ZenohSender(zpub)
        deadline = time.monotonic() + 30.0
        while not Path(out + ".ready").exists():  # the chain is up once one gets through
            if time.monotonic() > deadline:
                raise RuntimeError(f"zenoh chain did not come up (see {run}/zrecv.log)")
            _send_floor(pub, 0.05)
        t_start = time.monotonic_ns()
        _send_floor(pub, seconds)
        deadline = time.monotonic() + 60.0
        while recv.poll() is None:  # an end marker may be dropped like any sample: repeat
            if time.monotonic() > deadline:
                raise RuntimeError(f"zenoh receiver never saw the end (see {run}/zrecv.log)")
            zpub.put(b"END")
            with contextlib.suppress(subprocess.TimeoutExpired):
                recv.wait(0.1)
    finally:
        if session is not None:
            session.close()
        _stop(relay)
        if recv is not None:
            _stop(recv)
    rows = np.loadtxt(out, np.int64, delimiter=",", skiprows=1, usecols=(0, 1), ndmin=2)
    rows = rows[rows[:, 1] >= t_start]
    return (rows[:, 0] - rows[:, 1]) / 1e3


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


def measure_idle(run: Path, seconds: float, scheme: str = "ipc") -> float:
    """CPU % (all threads) of a core whose sensors are static, its sockets on ``scheme``."""
    from spikefuse.core.demo import write_demo_graph

    gdir = run / "graphs"
    write_demo_graph(gdir)
    tag = "idle" if scheme == "ipc" else f"idle-{scheme}"
    still = {"sensor": "still", "timeout_s": 3600}
    extra = {}
    if scheme != "ipc":
        still["endpoint"] = _sdk_endpoint(run, scheme, "still-u")
        extra["endpoint"] = _sdk_endpoint(run, scheme, tag)
    cfg = run / f"{tag}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "idle",
                "graph": str(gdir / "demo.yaml"),
                "run_dir": str(run),
                "inputs": {"gyro": dict(still), "accel": dict(still)},
                "actuators": {"motors": {"output": "motors"}},
                **extra,
            }
        )
    )
    core = _spawn(
        [sys.executable, "-m", "spikefuse", "core", "--config", str(cfg)], run / f"{tag}.log"
    )
    try:
        _wait_started(run / f"{tag}.sock", 30.0)
        time.sleep(1.0)  # let start-up finish
        c0, t0 = cpu_ns(core.pid), time.monotonic_ns()
        time.sleep(seconds)
        c1, t1 = cpu_ns(core.pid), time.monotonic_ns()
    finally:
        _stop(core)
    return 100.0 * (c1 - c0) / (t1 - t0)


def _wait_started(sock: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the core did not bind {sock}")
        time.sleep(0.05)


def cpu_ns(pid: int) -> int:
    """CPU time (ns) of every thread of ``pid`` (zmq I/O threads included), from the
    scheduler's own accounting (``schedstat``: ns resolution, unlike the 10 ms ticks of
    ``stat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total


# --------------------------------------------------------------------------- in-process


def measure_core_inprocess(seed: int, n_batches: int = 5000, repeats: int = 3):
    """Core work per batch without sockets, best of ``repeats``: the compiled path
    (``FusionCore.receive``: decode + checks + engine + routing + MotorCommand encoding)
    and, as the baseline in the same run, the Python path (``decode``, ``handle``,
    ``service`` encoding its MotorCommands), on the bench graph and the 10k ev/s stream
    (10 events per batch). Returns (compiled us/batch, Python us/batch, share compiled)."""
    from spikefuse.core import CoreConfig, FusionCore
    from spikefuse.engine import Engine
    from spikefuse.protocol import Encoder, EventBatch, decode

    with tempfile.TemporaryDirectory(prefix="sfcore") as tmp:
        cfg = CoreConfig.model_validate(
            yaml.safe_load(_write_core_config(Path(tmp), seed).read_text())
        )
        graph = bench_graph(seed).resolve()
    stream = make_stream(10_000, n_batches / 1000, seed)
    t0 = 10**12
    enc = Encoder()
    payloads = [
        enc.encode(EventBatch("bench", k, t0 + k * BATCH_PERIOD_NS, "x", 1.0, ch, co))
        for k, (ch, co) in enumerate(stream)
    ]
    best: dict[bool, float] = {}
    share = 0.0
    for _ in range(repeats):
        for fast in (True, False):
            core = FusionCore(
                cfg, graph, Engine(graph), t0, lambda m: bool(enc.encode(m)), fast_path=fast
            )
            core.send_payload = lambda topic, data: True
            now = t0 + 50_000
            wake = core.next_wake_ns()
            n_fast = 0
            start = time.perf_counter_ns()
            for p in payloads:
                if fast and core.receive(b"sensor/bench", p, now):
                    n_fast += 1
                    if now >= wake:
                        core.service(now)
                        wake = core.next_wake_ns()
                else:
                    core.handle(decode(p), now)
                    core.service(now)
                now += BATCH_PERIOD_NS
            us = (time.perf_counter_ns() - start) / 1e3 / len(payloads)
            best[fast] = min(best.get(fast, us), us)
            share = max(share, n_fast / len(payloads)) if fast else share
    return best[True], best[False], share


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> BenchResult:
    prio = args.rt_priority
    with tempfile.TemporaryDirectory(prefix="sfbench") as tmp, _realtime(prio):
        run_dir = Path(tmp)
        floor, relay_cpu_us = measure_floor(run_dir, args.seconds, prio)
        sdk = measure_sdk(run_dir, args.seconds, prio)
        sdk_unix = measure_sdk(run_dir, args.seconds, prio, scheme="unix")
        # zenoh under SCHED_FIFO: its runtime threads inherit the policy; not run there
        zen = measure_zenoh(run_dir, args.seconds) if zenoh_available() and not prio else None
        # not under SCHED_FIFO: there the bench process spun at 100 % of the one CPU its
        # equal-priority children needed (twice; see docs/benchmarks.md)
        pinned = None if args.no_pinned or prio else measure_pinned(run_dir, args.seconds)
        e2e = measure_e2e(run_dir, args.seconds, args.seed, prio)
        loops = {
            hz: measure_loop(run_dir, hz, args.seconds, args.seed, prio) for hz in (30.0, 1000.0)
        }
        idle = measure_idle(run_dir, args.idle_seconds)
        idle_unix = measure_idle(run_dir, args.idle_seconds, scheme="unix")
    ev_ops, dense1k_ops = demo_compute(5.0)
    res = _report(floor, relay_cpu_us, e2e, loops, idle, ev_ops, dense1k_ops)
    _report_sdk(res, floor, sdk, zen)
    _report_sdk_unix(res, floor, sdk, sdk_unix, zen)
    res.fields["idle_cpu_percent_unix"] = round(idle_unix, 3)
    res.notes.append(f"idle core CPU: {idle:.2f} % over ipc://, {idle_unix:.2f} % over unix://")
    if pinned is not None:
        _report_pinned(res, floor, sdk, *pinned)
    _report_inprocess(res, *measure_core_inprocess(args.seed))
    if args.rounds > 0:
        with tempfile.TemporaryDirectory(prefix="sfbench") as tmp:
            _report_rounds(
                res, measure_rounds(Path(tmp), args.rounds, args.round_seconds, args.seed)
            )
    return res


def measure_rounds(run: Path, n: int, seconds: float, seed: int) -> list[dict[str, float]]:
    """``n`` rounds, each: the floor, the core chain at 10k ev/s, the SDK chain and (if
    installed) zenoh, back to back; per round the p50 of each chain (us)."""
    rounds = []
    for i in range(n):
        d = run / f"round{i}"
        d.mkdir()
        p50 = {"floor": float(np.percentile(measure_floor(d, seconds)[0], 50))}
        p50["core"] = float(
            np.percentile(measure_e2e(d, seconds, seed, rates=(10_000,))[10_000].lat_us, 50)
        )
        p50["sdk"] = float(np.percentile(measure_sdk(d, seconds), 50))
        p50["sdk_unix"] = float(np.percentile(measure_sdk(d, seconds, scheme="unix"), 50))
        p50["floor_unix"] = float(np.percentile(measure_floor(d, seconds, scheme="unix")[0], 50))
        if zenoh_available():
            p50["zenoh"] = float(np.percentile(measure_zenoh(d, seconds), 50))
        rounds.append(p50)
    return rounds


ROUND_CHAINS = {
    "floor": "floor",
    "core": "core 10k",
    "sdk": "SDK",
    "sdk_unix": "SDK unix",
    "floor_unix": "floor unix",
    "zenoh": "zenoh",
}
"""The chains of a round (keys of its p50s) and their labels in the printed note."""
ROUND_RATIOS = (
    ("p50_ratio_vs_floor_10k_median", "core", "floor"),
    ("sdk_p50_ratio_vs_floor_median", "sdk", "floor"),
    ("sdk_unix_p50_ratio_vs_floor_median", "sdk_unix", "floor"),
    ("sdk_unix_p50_ratio_vs_sdk_median", "sdk_unix", "sdk"),
    ("floor_unix_p50_ratio_vs_floor_median", "floor_unix", "floor"),
    ("sdk_p50_ratio_vs_zenoh_median", "sdk", "zenoh"),
    ("zenoh_p50_ratio_vs_floor_median", "zenoh", "floor"),
    ("sdk_unix_p50_ratio_vs_zenoh_median", "sdk_unix", "zenoh"),
    ("floor_unix_p50_ratio_vs_zenoh_median", "floor_unix", "zenoh"),
)
"""(field, chain a, chain b): the median over rounds of a's p50 / b's p50, when every round
has both (zenoh only when installed)."""


def _report_rounds(res: BenchResult, rounds: list[dict[str, float]]) -> None:
    """Medians of the per-round p50 ratios (each ratio within one round)."""
    res.fields["rounds"] = len(rounds)
    if all("sdk_unix" in r for r in rounds):
        res.fields["sdk_unix_p50_us_median"] = round(
            float(np.median([r["sdk_unix"] for r in rounds])), 1
        )
    for name, a, b in ROUND_RATIOS:
        if all(a in r and b in r for r in rounds):
            res.fields[name] = round(float(np.median([r[a] / r[b] for r in rounds])), 3)
    keys = [k for k in ROUND_CHAINS if k in rounds[0]]
    line = ", ".join("/".join(f"{r[k]:.0f}" for k in keys if k in r) for r in rounds)
    res.notes.append(
        f"{len(rounds)} interleaved rounds, p50 us {'/'.join(ROUND_CHAINS[k] for k in keys)}: "
        f"{line}; median ratios: "
        + ", ".join(f"{k} {v}" for k, v in res.fields.items() if k.endswith("_median"))
    )


def _report_inprocess(res: BenchResult, hot_us: float, py_us: float, share: float) -> None:
    res.notes.append(
        f"core work per batch in-process (no sockets, 10 events/batch): compiled path "
        f"{hot_us:.2f} us ({share:.1%} of batches), Python path {py_us:.2f} us "
        f"(ratio {hot_us / py_us:.3f})"
    )
    res.fields["core_us_per_batch_inprocess"] = round(hot_us, 2)
    res.fields["core_us_per_batch_inprocess_python"] = round(py_us, 2)
    res.fields["core_inprocess_ratio_vs_python"] = round(hot_us / py_us, 4)


@contextlib.contextmanager
def _realtime(priority: int):
    """SCHED_FIFO for this process while inside (no-op for 0); restored on exit."""
    if not priority:
        yield
        return
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as exc:
        raise ConfigError(f"cannot use SCHED_FIFO {priority}: {exc}", "--rt-priority") from None
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _report(
    floor: np.ndarray,
    relay_cpu_us: float,
    e2e: dict[int, Run],
    loops: dict[float, Run],
    idle: float,
    ev_ops: float,
    dense1k_ops: float,
) -> BenchResult:
    lat10k = e2e[10_000].lat_us
    res = BenchResult(
        "End-to-end latency: driver t_ns -> MotorCommand at the actuator (ipc, 2 hops)",
        header=(
            "measure",
            "n",
            "p50 us",
            "p99 us",
            "max us",
            "mean us",
            "mean/batch us",
            "ops/s",
            "cpu us/batch",
        ),
    )
    res.add("raw pyzmq 2-hop floor", len(floor), *_stats(floor), "-", "-", relay_cpu_us)
    for rate in RATES:
        r = e2e[rate]
        res.add(
            f"event-driven @ {rate // 1000}k ev/s",
            len(r.lat_us),
            *_stats(r.lat_us),
            _mean(r.batch_lat_us),
            r.ops_per_s,
            r.cpu_us_per_batch,
        )
    for hz, r in loops.items():
        res.add(
            f"fixed-rate loop {hz:g} Hz @ 10k",
            len(r.lat_us),
            *_stats(r.lat_us),
            _mean(r.batch_lat_us),
            r.ops_per_s,
            r.cpu_us_per_batch,
        )
    ev = e2e[10_000]
    l30, l1k = loops[30.0], loops[1000.0]
    mean_ev = _mean(ev.batch_lat_us)
    ratio30 = mean_ev / _mean(l30.batch_lat_us)
    ratio1k = mean_ev / _mean(l1k.batch_lat_us)
    res.notes += [
        f"mean latency per batch, event-driven(10k) / 30 Hz loop: {ratio30:.4f} "
        f"({1 / ratio30:.0f}x lower); / 1 kHz loop: {ratio1k:.3f} (same stream, same 2 hops); "
        f"the raw floor's own mean / 30 Hz loop: {np.mean(floor) / _mean(l30.batch_lat_us):.4f}",
        f"compute on the demo stream: event-driven {ev_ops:.3g} syn ops/s vs 1 kHz dense loop "
        f"{dense1k_ops:.3g} ops/s = {ev_ops / dense1k_ops:.4f}x; on the 10k bench stream: "
        f"{ev.ops_per_s:.3g} vs {l1k.ops_per_s:.3g} ops/s = {ev.ops_per_s / l1k.ops_per_s:.4f}x",
        f"loops: 1 kHz ran {l1k.extra.get('n_ticks', 0)} ticks ({l1k.extra.get('n_missed_ticks', 0)}"
        f" missed), 30 Hz {l30.extra.get('n_ticks', 0)}; batches never reflected: event-driven "
        f"{ev.n_unreflected}, loops {l30.n_unreflected}/{l1k.n_unreflected}",
        f"idle core CPU (static sensors, 20 Hz refresh, all threads): {idle:.3f} %",
    ]
    res.fields = {
        "p50_us_10k": _r(np.percentile(lat10k, 50)),
        "p99_us_10k": _r(np.percentile(lat10k, 99)),
        "max_us_10k": _r(np.max(lat10k)),
        "floor_p50_us": _r(np.percentile(floor, 50)),
        "mean_latency_ratio_vs_30hz_loop": round(ratio30, 5),
        "compute_ratio_vs_1khz_loop": round(ev_ops / dense1k_ops, 5),
        "idle_cpu_percent": round(idle, 3),
        "p50_ratio_vs_floor_10k": round(
            float(np.percentile(lat10k, 50) / np.percentile(floor, 50)), 3
        ),
        "p50_us_1k": _r(np.percentile(e2e[1_000].lat_us, 50)),
        "p99_us_1k": _r(np.percentile(e2e[1_000].lat_us, 99)),
        "p50_us_100k": _r(np.percentile(e2e[100_000].lat_us, 50)),
        "p99_us_100k": _r(np.percentile(e2e[100_000].lat_us, 99)),
        "max_us_100k": _r(np.max(e2e[100_000].lat_us)),
        "floor_p99_us": _r(np.percentile(floor, 99)),
        "floor_mean_us": _r(np.mean(floor)),
        "mean_us_10k": _r(np.mean(lat10k)),
        "mean_batch_us_10k": _r(mean_ev),
        # every batch, also those a coalesced or skipped command reflects only later
        "p50_batch_us_10k": _r(np.percentile(ev.batch_lat_us, 50)),
        "p99_batch_us_10k": _r(np.percentile(ev.batch_lat_us, 99)),
        "loop_30hz_mean_batch_us": _r(_mean(l30.batch_lat_us)),
        "loop_1khz_mean_batch_us": _r(_mean(l1k.batch_lat_us)),
        "mean_latency_ratio_vs_1khz_loop": round(ratio1k, 5),
        "floor_mean_ratio_vs_30hz_loop": round(float(np.mean(floor)) / _mean(l30.batch_lat_us), 5),
        "ops_per_s_10k": _r(ev.ops_per_s),
        "loop_1khz_ops_per_s": _r(l1k.ops_per_s),
        "loop_30hz_ops_per_s": _r(l30.ops_per_s),
        "compute_ratio_vs_1khz_loop_bench_stream": round(ev.ops_per_s / l1k.ops_per_s, 5),
        "loop_1khz_missed_ticks": int(l1k.extra.get("n_missed_ticks", 0)),
        "n_commands_10k": int(lat10k.size),
        "core_cpu_us_per_batch_10k": _r(ev.cpu_us_per_batch),
        "relay_cpu_us_per_msg": _r(relay_cpu_us),
        "loop_1khz_cpu_us_per_batch": _r(l1k.cpu_us_per_batch),
    }
    return res


def _report_sdk(
    res: BenchResult, floor: np.ndarray, sdk: np.ndarray, zen: np.ndarray | None
) -> None:
    """The SDK driver chain and the zenoh chain against the floor of the same run."""
    floor_p50 = float(np.percentile(floor, 50))
    res.add("SDK driver -> core 3->3 -> act", len(sdk), *_stats(sdk), "-", "-", "-")
    sdk_p50 = float(np.percentile(sdk, 50))
    res.fields["sdk_p50_us"] = _r(sdk_p50)
    res.fields["sdk_p99_us"] = _r(np.percentile(sdk, 99))
    res.fields["sdk_p50_ratio_vs_floor"] = round(sdk_p50 / floor_p50, 3)
    note = f"SDK chain p50 / floor p50: {sdk_p50 / floor_p50:.2f}"
    if zen is not None and zen.size:
        res.add("zenoh 2-hop (unix sockets)", len(zen), *_stats(zen), "-", "-", "-")
        zen_p50 = float(np.percentile(zen, 50))
        res.fields["zenoh_p50_us"] = _r(zen_p50)
        res.fields["zenoh_p99_us"] = _r(np.percentile(zen, 99))
        res.fields["zenoh_p50_ratio_vs_floor"] = round(zen_p50 / floor_p50, 3)
        res.fields["sdk_p50_ratio_vs_zenoh"] = round(sdk_p50 / zen_p50, 3)
        note += f"; zenoh p50 / floor p50: {zen_p50 / floor_p50:.2f}; SDK / zenoh: "
        note += f"{sdk_p50 / zen_p50:.2f}"
    else:
        note += "; no zenoh chain (not installed: pip install eclipse-zenoh; or --rt-priority)"
    res.notes.append(note)


def _report_sdk_unix(
    res: BenchResult,
    floor: np.ndarray,
    sdk: np.ndarray,
    sdk_unix: np.ndarray,
    zen: np.ndarray | None,
) -> None:
    """The same SDK chain with both hops on ``unix://`` (one wake per hop)."""
    res.add("SDK chain over unix://", len(sdk_unix), *_stats(sdk_unix), "-", "-", "-")
    p50 = float(np.percentile(sdk_unix, 50))
    res.fields["sdk_unix_p50_us"] = _r(p50)
    res.fields["sdk_unix_p99_us"] = _r(np.percentile(sdk_unix, 99))
    res.fields["sdk_unix_p50_ratio_vs_floor"] = round(p50 / float(np.percentile(floor, 50)), 3)
    res.fields["sdk_unix_p50_ratio_vs_sdk"] = round(p50 / float(np.percentile(sdk, 50)), 3)
    note = f"SDK chain over unix:// p50 / over ipc p50: {res.fields['sdk_unix_p50_ratio_vs_sdk']}"
    if zen is not None and zen.size:
        res.fields["sdk_unix_p50_ratio_vs_zenoh"] = round(p50 / float(np.percentile(zen, 50)), 3)
        note += f"; / zenoh p50: {res.fields['sdk_unix_p50_ratio_vs_zenoh']}"
    res.notes.append(note)


def _report_pinned(
    res: BenchResult,
    floor: np.ndarray,
    sdk: np.ndarray,
    cpu: int,
    floor1: np.ndarray,
    sdk1: np.ndarray,
) -> None:
    """The same chains with every process on one CPU, against the unpinned ones."""
    res.add(f"floor, all on CPU {cpu}", len(floor1), *_stats(floor1), "-", "-", "-")
    res.add(f"SDK chain, all on CPU {cpu}", len(sdk1), *_stats(sdk1), "-", "-", "-")
    f1, s1 = float(np.percentile(floor1, 50)), float(np.percentile(sdk1, 50))
    f0, s0 = float(np.percentile(floor, 50)), float(np.percentile(sdk, 50))
    res.fields.update(
        {
            "floor_p50_us_1cpu": _r(f1),
            "sdk_p50_us_1cpu": _r(s1),
            "floor_p50_ratio_1cpu_vs_free": round(f1 / f0, 3),
            "sdk_p50_ratio_1cpu_vs_free": round(s1 / s0, 3),
        }
    )
    res.notes.append(
        f"one CPU for the whole chain (launch `cpu: [{cpu}]` on every process): floor p50 "
        f"x{f1 / f0:.2f}, SDK chain p50 x{s1 / s0:.2f} of the unpinned run"
    )


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if a.size else float("nan")


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


if __name__ == "__main__":  # the children: the floor's relay, the fixed-rate loop
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        relay_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "urelay":
        unix_relay_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "zrelay":
        zenoh_relay_main(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "zrecv":  # OUT_CSV
        zenoh_recv_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 7 and sys.argv[1] == "loop":
        loop_main(*sys.argv[2:])
    else:
        sys.exit(
            "usage: python -m spikefuse.benchmarks.bench_latency relay SUB_EP PUB_EP\n"
            "       python -m spikefuse.benchmarks.bench_latency urelay SUB_EP PUB_EP\n"
            "       python -m spikefuse.benchmarks.bench_latency zrelay LISTEN_EP\n"
            "       python -m spikefuse.benchmarks.bench_latency zrecv CONNECT_EP OUT_CSV\n"
            "       python -m spikefuse.benchmarks.bench_latency loop SUB_EP PUB_EP RATE_HZ "
            "GRAPH STATS_JSON"
        )
