"""A sensor that closes its stream says so (a Heartbeat with state ``ended``) and the core
tells that apart from a sensor gone silent: the protocol, the core's input state machine
(on both per-message paths), real driver and core processes (a driver that finishes, one
stopped by SIGTERM, one restarted, one killed by SIGKILL) and the live replay's end."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from _core_util import LineReader, spawn, stop, write_yaml
from _drivers_util import Received, drain, start_driver, stop_driver

from spikefuse.core import CoreConfig, FusionCore
from spikefuse.engine import Engine
from spikefuse.errors import ProtocolError
from spikefuse.graph import Graph
from spikefuse.protocol import (
    HEARTBEAT_ENDED,
    EventBatch,
    Heartbeat,
    MotorCommand,
    Status,
    decode,
    encode,
    topic_of,
)
from spikefuse.recording.live import replay_live
from spikefuse.recording.mcapio import LogWriter
from spikefuse.sdk import DriverConfig, driver, load_driver_config, run_driver
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber

MS = 1_000_000
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "drivers"
SAFE = 7.0
"""The actuator's safe value in these tests: no output of the graph comes near it."""


# ------------------------------------------------------------------ protocol


def test_ended_heartbeat_round_trips_and_a_bad_state_names_its_field():
    hb = Heartbeat("imu", 3, 10**9, HEARTBEAT_ENDED, "stopped", {"gyro": np.arange(3)})
    assert decode(encode(hb)) == hb
    with pytest.raises(ProtocolError) as e:
        encode(Heartbeat("imu", 3, 1, "ending"))
    assert e.value.reason == "encode" and e.value.path == "Heartbeat.state"
    for state in ("ending", "ENDED", 4, None, b"ended"):
        payload = msgpack.packb([1, 2, "imu", 3, 1, state, "", None], use_bin_type=True)
        with pytest.raises(ProtocolError) as e:
            decode(payload)
        assert e.value.reason == "bad_field" and e.value.path == "Heartbeat.state", state
        assert "ended" in str(e.value)  # the message lists the states it accepts


def test_the_compiled_readers_leave_an_end_announcement_to_the_decoder(tmp_path):
    """The core's compiled path takes EventBatch payloads only and the actuator's reader
    MotorCommands only: an ended heartbeat goes to the Python path untouched."""
    from spikefuse.core.hot import motor_reader

    payload = encode(Heartbeat("s", 0, MS, HEARTBEAT_ENDED, "stopped"))
    assert motor_reader("s").read(b"sensor/s", payload) is None
    core, _ = _core(tmp_path, fast=True)
    assert core.hot is not None
    assert core.receive(b"sensor/s", payload, MS) is False  # nothing changed
    assert not core.inputs["x"].end_announced and core.n_heartbeats == 0


# ------------------------------------------------------------------ the input state machine


def _core(tmp_path, on_stale="safe", fast=False):
    g = Graph("small")
    g.input("x", 2, scale=1.0)
    g.dense("h", "x", 0.5 * np.eye(2), scale=2.0)
    g.output("y", "h", scale=2.0)
    gpath = tmp_path / "g.npz"
    g.save(gpath)
    cfg = CoreConfig(
        graph=gpath,
        inputs={"x": {"sensor": "s", "timeout_s": 0.2, "on_stale": on_stale}},
        actuators={"m": {"output": "y", "safe_values": SAFE}},
    )
    graph = Graph.load(gpath).resolve()
    sent: list = []
    core = FusionCore(
        cfg, graph, Engine(graph), 0, lambda m: sent.append(m) or True, fast_path=fast
    )
    core.send_payload = lambda topic, data: sent.append(decode(data)) or True
    return core, sent


def _feed(core: FusionCore, msg, now_ns: int) -> None:
    """As the daemon does: the compiled path first (where built), then the Python path."""
    if not core.receive(topic_of(msg), encode(msg), now_ns):
        core.handle(msg, now_ns)
    core.service(now_ns)


def _batch(seq: int, t_ns: int, counts) -> EventBatch:
    return EventBatch("s", seq, t_ns, "x", 1.0, np.arange(2, dtype=np.int32), np.int32(counts))


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("on_stale", ["safe", "hold"])
def test_ended_is_not_stale_falls_back_as_on_stale_and_data_makes_it_live(
    tmp_path, caplog, fast, on_stale
):
    core, sent = _core(tmp_path, on_stale, fast)
    st = core.inputs["x"]
    for k in range(3):
        _feed(core, _batch(k, (k + 1) * MS, [2, 4]), (k + 1) * MS)
    live = [3.0, 6.0]  # 0.5 * the sums
    assert list([m for m in sent if isinstance(m, MotorCommand)][-1].values) == live
    caplog.set_level("INFO", logger="spikefuse.core.fusion")
    _feed(core, Heartbeat("s", 0, 4 * MS, HEARTBEAT_ENDED, "stopped"), 4 * MS)
    assert st.ended and not st.stale and st.n_ended == 1
    commands = [m for m in sent if isinstance(m, MotorCommand)]
    want = [SAFE, SAFE] if on_stale == "safe" else live
    assert list(commands[-1].values) == want  # an ended input is no longer fresh
    for now in (300 * MS, 2_000 * MS, 60_000 * MS):  # long past the timeout: still ended
        core.service(now)
    assert st.ended and not st.stale and st.n_stale == 0 and not core.degraded
    metrics = core.status_metrics(60_000 * MS)
    assert metrics["state"] == "ended" and metrics["input_states"] == {
        "live": 0,
        "stale": 0,
        "ended": 1,
    }
    assert metrics["inputs"]["x"]["ended"] is True and metrics["inputs"]["x"]["n_ended"] == 1
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("INFO", "input 'x' (sensor s) ended: the sensor closed its stream")]
    caplog.clear()
    # a restarted driver: its first batch (seq 0 again) opens the stream
    _feed(core, _batch(0, 60_001 * MS, [2, 0]), 60_001 * MS)
    assert not st.ended and not st.stale
    assert [(r.levelname, r.getMessage()) for r in caplog.records][-1] == (
        "INFO",
        "input 'x' (sensor s) is live again",
    )
    assert list([m for m in sent if isinstance(m, MotorCommand)][-1].values) == [1.0, 0.0]
    assert core.status_metrics(60_001 * MS)["state"] == "ok"
    # silent again, this time with no end: stale (a fault), as before
    core.service(60_300 * MS)
    assert st.stale and not st.ended and core.degraded and st.n_stale == 1
    assert caplog.records[-1].levelname == "WARNING"
    assert "is stale" in caplog.records[-1].getMessage()


def test_a_heartbeat_after_the_end_opens_the_stream_and_failed_refreshes_nothing(tmp_path):
    core, _ = _core(tmp_path)
    st = core.inputs["x"]
    _feed(core, _batch(0, MS, [1, 1]), MS)
    _feed(core, Heartbeat("s", 0, 2 * MS, HEARTBEAT_ENDED), 2 * MS)
    assert st.ended
    _feed(core, Heartbeat("s", 0, 3 * MS, "ok"), 3 * MS)  # a restarted driver's first
    assert not st.ended and not st.stale
    _feed(core, Heartbeat("s", 1, 100 * MS, "failed", "no device"), 100 * MS)
    core.service(204 * MS)  # a failed heartbeat did not refresh liveness: stale at 3 + 200
    assert st.stale and not st.ended


def test_a_silent_input_that_then_ends_is_ended(tmp_path):
    core, sent = _core(tmp_path)
    st = core.inputs["x"]
    _feed(core, _batch(0, MS, [1, 1]), MS)
    core.service(300 * MS)
    assert st.stale and st.n_stale == 1
    _feed(core, Heartbeat("s", 0, 301 * MS, HEARTBEAT_ENDED), 301 * MS)
    assert st.ended and not st.stale and not core.degraded
    assert list([m for m in sent if isinstance(m, MotorCommand)][-1].values) == [SAFE, SAFE]


def test_a_sensor_not_heard_from_yet_is_waited_for_not_warned_about(tmp_path, caplog):
    """Before its sensor's first message an input past its timeout falls back as a stale
    one (safe values) but is a sensor still starting: INFO, not counted as stale."""
    caplog.set_level("INFO", logger="spikefuse.core.fusion")
    core, sent = _core(tmp_path)
    st = core.inputs["x"]
    core.service(300 * MS)
    assert st.stale and st.n_stale == 0
    assert list([m for m in sent if isinstance(m, MotorCommand)][-1].values) == [SAFE, SAFE]
    _feed(core, _batch(0, 301 * MS, [2, 2]), 301 * MS)
    assert not st.stale
    core.service(600 * MS)  # heard from, then silent: that is stale
    assert st.stale and st.n_stale == 1
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "input 'x' (sensor s): nothing received yet (waiting for its sensor)"),
        ("INFO", "input 'x' (sensor s) is live"),
        ("WARNING", "input 'x' (sensor s) is stale"),
    ]


def test_a_sensor_never_heard_from_is_warned_about_once_after_a_grace(tmp_path, caplog):
    """A sensor that never speaks (a mistyped sensor name, a wrong endpoint) is not a
    sensor still starting: after max(10 input timeouts, 5 s) of silence from the start one
    WARNING names it, once; its first message later makes it live as usual."""
    caplog.set_level("INFO", logger="spikefuse.core.fusion")
    core, _ = _core(tmp_path)  # timeout_s 0.2: the grace is 5 s
    core.service(300 * MS)
    core.service(4_900 * MS)
    assert [r.levelname for r in caplog.records] == ["INFO"]
    core.service(5_100 * MS)
    core.service(9_000 * MS)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "input 'x' (sensor s): nothing received in 5.1 s: check that a driver publishes "
        "sensor 's' on this input's endpoint"
    ]
    _feed(core, _batch(0, 9_001 * MS, [2, 2]), 9_001 * MS)
    assert caplog.records[-1].getMessage() == "input 'x' (sensor s) is live"
    assert core.inputs["x"].n_stale == 0


# ------------------------------------------------------------------ the SDK's way out


class CrashConfig(DriverConfig):
    default_groups = {"a": {"scale": 10.0, "rate_hz": 1000.0}}
    name: str = "crash"


@driver("eos_crash", CrashConfig)
def CRASH(cfg: CrashConfig, ctx):
    """Ten samples, then a bug (not a SensorError/OSError: no retry)."""
    for k, sample in enumerate(ctx.poll({"a": lambda t_ns: [1.0]}, realtime=False)):
        if k == 10:
            raise RuntimeError("a bug in the driver")
        yield sample


def test_a_driver_whose_source_raises_sends_failed_not_ended(tmp_path):
    cfg = load_driver_config(
        CRASH, None, [f"endpoint=ipc://{tmp_path}/c.sock", "wait_for_subscribers=1"]
    )
    got, errors = Received(), []

    def run():
        try:
            run_driver(CRASH, cfg)
        except RuntimeError as exc:
            errors.append(exc)

    with Subscriber(cfg.endpoint) as sub:
        th = threading.Thread(target=run)
        th.start()
        th.join(30)
        drain(sub, got)
    assert [str(e) for e in errors] == ["a bug in the driver"]
    states = [h.state for h in got.heartbeats]
    assert states[-1] == "failed" and HEARTBEAT_ENDED not in states
    assert "the driver failed" in got.heartbeats[-1].detail
    assert got.sums("a", 1).tolist() == [10]  # what it read went out before
    assert got.heartbeats[-1].totals["a"].tolist() == [10]


# ------------------------------------------------------------------ real processes


def _graph(tmp_path: Path) -> Path:
    """gyro (3) -> 0.5 * I -> y; accel (3) unused by the motors."""
    g = Graph("imu_motors")
    g.input("gyro", 3, scale=20.0)
    g.input("accel", 3, scale=2.0)
    g.dense("h", "gyro", 0.5 * np.eye(3), scale=20.0)
    g.output("y", "h", scale=20.0)
    g.save(tmp_path / "g.npz")
    return tmp_path / "g.npz"


class System:
    """A real ``spikefuse core`` fed by a real imu driver (synthetic), and a subscriber of
    the core's commands and status."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        inp = {"sensor": "imu", "timeout_s": 0.3, "on_stale": "safe"}
        cfg = write_yaml(
            tmp_path / "core.yaml",
            {
                "name": "core",
                "graph": str(_graph(tmp_path)),
                "run_dir": str(tmp_path),
                "inputs": {"gyro": inp, "accel": inp},
                "actuators": {"motors": {"output": "y", "safe_values": SAFE}},
                "status_period_s": 0.1,
            },
        )
        self.sub = Subscriber(f"ipc://{tmp_path}/core.sock", ["motor/", "status/core"])
        self.core = spawn("core", "--config", str(cfg))
        self.log = LineReader(self.core)
        self.commands: list[MotorCommand] = []
        self.statuses: list[Status] = []

    def driver(self, *over: str):
        return start_driver(
            "imu",
            CONFIGS / "imu_synthetic.yaml",
            f"run_dir={self.tmp}",
            "groups.mag.enabled=false",
            "heartbeat_period_s=0.1",
            "wait_for_subscribers=1",
            *over,
        )

    def until(self, pred, timeout_s: float = 30.0) -> Status:
        """Receive until a status of the core satisfies ``pred(metrics)``; that status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.sub.recv_many(0.1):
                if isinstance(m, MotorCommand):
                    self.commands.append(m)
                elif isinstance(m, Status):
                    self.statuses.append(m)
                    if pred(m.metrics):
                        return m
        raise AssertionError(f"no such status; last: {self.statuses[-1:]}\n{self.log.text()}")

    def close(self) -> str:
        rc = stop(self.core)
        self.log.join(10)
        self.sub.close()
        assert rc == 0, self.log.text()
        return self.log.text()


def _states(m: dict) -> dict:
    return m["input_states"]


def _after(commands: list[MotorCommand], t_ns: int) -> list[list[float]]:
    return [list(c.values) for c in commands if c.t_ns > t_ns]


def test_a_driver_that_finishes_ends_its_inputs_and_a_restarted_one_is_live(tmp_path):
    s = System(tmp_path)
    try:
        drv = s.driver("duration_s=1.0")
        s.until(lambda m: m["totals"]["n_batches"] > 50 and _states(m)["live"] == 2)
        assert any(v != [SAFE] * 3 for v in _after(s.commands, 0))  # the graph's output
        assert drv.wait(30) == 0  # the source ran out (duration_s): a normal end
        ended = s.until(lambda m: _states(m)["ended"] == 2)
        assert ended.metrics["state"] == "ended" and _states(ended.metrics)["stale"] == 0
        # four timeouts later, still ended, never stale; the motors at their safe values
        t_end = ended.t_ns
        s.until(lambda m: s.statuses[-1].t_ns > t_end + 1_200_000_000)
        # (before the first data, a slow start on a loaded machine may make them stale)
        n_stale = {k: v["n_stale"] for k, v in ended.metrics["inputs"].items()}
        assert all(_states(st.metrics)["stale"] == 0 for st in s.statuses if st.t_ns >= t_end)
        later = _after(s.commands, t_end)
        assert later and all(v == [SAFE] * 3 for v in later)
        # the driver comes back: live again, then stopped by SIGTERM: ended again
        drv = s.driver()
        s.until(lambda m: _states(m)["live"] == 2)
        rc, _, err = stop_driver(drv, signal.SIGTERM)
        assert rc == 0, err
        again = s.until(lambda m: _states(m)["ended"] == 2)
        assert again.metrics["inputs"]["gyro"]["n_ended"] == 2
        assert {k: v["n_stale"] for k, v in again.metrics["inputs"].items()} == n_stale
    finally:
        text = s.close()
    ends = [ln for ln in text.splitlines() if "ended: the sensor closed its stream" in ln]
    assert len(ends) == 4 and all(" INFO " in ln for ln in ends), text  # 2 inputs x 2 ends
    after = text[text.index(ends[0]) :]
    assert "is live again" in after
    assert "is stale" not in after and "WARNING" not in after, text
    assert "inputs at the end: 0 live, 2 ended (their sensor closed its stream), 0 stale" in text


def test_a_killed_driver_goes_stale(tmp_path):
    s = System(tmp_path)
    try:
        drv = s.driver()
        s.until(lambda m: m["totals"]["n_batches"] > 50 and _states(m)["live"] == 2)
        drv.kill()  # SIGKILL: nothing is sent on the way out
        drv.wait(10)
        stale = s.until(lambda m: _states(m)["stale"] == 2)
        assert stale.metrics["state"] == "degraded" and _states(stale.metrics)["ended"] == 0
        s.until(lambda m: any(c.t_ns > stale.t_ns for c in s.commands), 10)
        assert _after(s.commands, stale.t_ns)[-1] == [SAFE] * 3
    finally:
        text = s.close()
    stale_lines = [ln for ln in text.splitlines() if "is stale" in ln]
    assert len(stale_lines) == 2 and all(" WARNING " in ln for ln in stale_lines), text
    assert "ended: the sensor closed its stream" not in text, text
    assert "0 ended" in text and "2 stale" in text


# ------------------------------------------------------------------ live replay


def _log(path: Path, msgs: list) -> Path:
    with LogWriter(path, flush_interval_s=None) as w:
        for m in msgs:
            w.write(topic_of(m).decode(), encode(m), m.t_ns, m.t_ns, m.seq)
    return path


def _replayed(tmp_path: Path, src: Path, **kw) -> tuple[list, object]:
    ep = f"ipc://{tmp_path}/bus"
    got: list = []
    with Publisher(ep) as pub, Subscriber(ep, ["sensor/"]) as sub:
        assert pub.wait_for_subscribers(1, 10.0)
        res: dict = {}
        th = threading.Thread(
            target=lambda: res.setdefault("r", replay_live(src, pub, StopSignal(), **kw))
        )
        th.start()
        th.join(30)
        while batch := sub.recv_many(0.3):
            got += batch
    return got, res["r"]


def _imu(seq: int, t_ns: int, sensor: str = "imu") -> EventBatch:
    return EventBatch(sensor, seq, t_ns, "gyro", 20.0, np.zeros(1, np.int32), np.ones(1, np.int32))


@pytest.mark.parametrize("restamp", [True, False])
def test_a_replay_announces_the_end_of_the_sensors_it_replayed(tmp_path, restamp):
    t = 10**9
    msgs = [
        _imu(0, t),
        Heartbeat("imu", 0, t + MS, "ok"),
        _imu(1, t + 2 * MS),
        _imu(0, t + 2 * MS, "cam"),  # no heartbeat recorded for cam
        _imu(2, t + 3 * MS),
    ]
    got, res = _replayed(tmp_path, _log(tmp_path / "a.mcap", msgs), fast=True, restamp=restamp)
    assert res.n_sent == 5 and res.n_ends_announced == 2 and len(got) == 7
    ends = {m.sensor: m for m in got[5:]}
    assert all(m.state == HEARTBEAT_ENDED and m.totals is None for m in ends.values())
    assert ends["imu"].seq == 1 and ends["cam"].seq == 0  # each heartbeat stream numbers on
    assert ends["imu"].t_ns == got[4].t_ns and ends["cam"].t_ns == got[3].t_ns  # its last
    assert "a.mcap" in ends["imu"].detail


def test_a_recorded_end_replays_as_recorded_and_nothing_is_added(tmp_path):
    t = 10**9
    end = Heartbeat("imu", 1, t + 2 * MS, HEARTBEAT_ENDED, "stopped by signal 15")
    msgs = [_imu(0, t), Heartbeat("imu", 0, t + MS, "ok"), _imu(1, t + 2 * MS), end]
    got, res = _replayed(tmp_path, _log(tmp_path / "b.mcap", msgs), fast=True, restamp=False)
    assert res.n_ends_announced == 0 and got[-1] == end and len(got) == 4
    # a recording in which the sensor came back after its end: the end is announced again
    back = [*msgs, _imu(0, t + 5 * MS), Heartbeat("imu", 0, t + 6 * MS, "ok")]
    got, res = _replayed(tmp_path, _log(tmp_path / "c.mcap", back), fast=True, restamp=False)
    assert res.n_ends_announced == 1 and len(got) == 7 and got[3] == end
    assert got[-1].state == HEARTBEAT_ENDED and got[-1].seq == 1 and got[-1].t_ns == t + 6 * MS
