"""Offline replay is the live core's input path on a virtual clock (issue 13).

Real processes: this test publishes a sensor stream on a real socket (a driver that sends a
duplicate, loses a batch, then restarts with seq 0), a ``spikefuse core`` process turns it
into motor commands and a ``spikefuse record`` process records the stream. The recording,
replayed offline, gives exactly the live core's commands (values and causes). The graph is
y = 0.5 * x (no integrator): every output depends only on the counts applied, so each
anomaly handled differently shows up in the values.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from _core_util import small_graph, stop, wait_recorded, write_yaml

from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status
from spikefuse.recording.offline import replay_offline
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber


def _batch(seq: int, ch: int, co: int) -> EventBatch:
    return EventBatch(
        "sens",
        seq,
        time.monotonic_ns(),
        "x",
        1.0,
        np.array([ch], np.int32),
        np.array([co], np.int32),
    )


def _script() -> list[tuple[str, object]]:
    """(what, message maker) in sending order; the totals are the driver's own."""
    return [
        ("batch", lambda: _batch(0, 0, 4)),
        ("batch", lambda: _batch(1, 1, 2)),
        ("same", lambda: _batch(1, 1, 2)),  # the same seq again: a duplicate, no change
        # seq 2 (+2 on channel 0) is lost on the way
        ("batch", lambda: _batch(3, 2, 6)),
        # the keyframe: the driver's totals bring the lost batch back
        ("hb", lambda: Heartbeat("sens", 0, time.monotonic_ns(), "ok", "", {"x": _tot(6, 2, 6)})),
        ("batch", lambda: _batch(0, 3, 2)),  # the driver restarted: its encoder from zero
        ("batch", lambda: _batch(1, 0, 1)),
        # in agreement with what arrived since the restart: nothing to correct
        (
            "same",
            lambda: Heartbeat("sens", 1, time.monotonic_ns(), "ok", "", {"x": _tot(1, 0, 0, 2)}),
        ),
        ("batch", lambda: _batch(2, 1, -3)),
    ]


def _tot(*v: int) -> np.ndarray:
    out = np.zeros(4, np.int64)
    out[: len(v)] = v
    return out


def _wait_motor(sub: Subscriber, got: list[MotorCommand], pred, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(pred(m) for m in got):
        assert time.monotonic() < deadline, f"no such motor command; got {got[-3:]}"
        got += [m for m in sub.recv_many(0.2) if isinstance(m, MotorCommand)]


def _distinct(seq):
    out = []
    for item in seq:
        if not out or out[-1][1] != item[1]:
            out.append(item)
    return out


def _live_run(tmp_path, graph, window_ms: float):
    run = tmp_path / "run"
    run.mkdir()
    cfg = write_yaml(
        tmp_path / "core.yaml",
        {
            "name": "core",
            "graph": str(graph),
            "run_dir": str(run),
            "inputs": {
                "x": {
                    "sensor": "sens",
                    "timeout_s": 60.0,
                    "on_stale": "hold",
                    "reorder_window_ms": window_ms,
                }
            },
            "actuators": {"motors": {"output": "y"}},
            "refresh_hz": 0.5,  # no refresh due between messages: the compiled path applies
            "queue_policy": "keep",
        },
    )
    rec = tmp_path / "rec.mcap"
    ep = f"ipc://{run}/sens.sock"
    py = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING"]
    got: list[MotorCommand] = []
    sent: list[tuple[str, object]] = []
    with Publisher(ep) as pub:
        core = subprocess.Popen([*py, "core", "--config", str(cfg)], stderr=subprocess.PIPE)
        recorder = subprocess.Popen(
            [*py, "record", "-o", str(rec), "--endpoint", ep, "--topics", "sensor/"],
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while pub.poll_subscriptions() < 3 or pub.n_subscribed(b"sensor/sens") < 2:
                assert time.monotonic() < deadline, "core and recorder did not subscribe"
                pub.socket.poll(200)
            with Subscriber(f"ipc://{run}/core.sock", ["motor/", "status/"]) as sub:
                _wait_motor(sub, got, lambda m: True)  # subscribed: the refresh arrives
                for what, make in _script():
                    msg = make()
                    assert pub.send(msg)
                    sent.append((what, msg))
                    if what != "same":  # a change: wait for the command it caused
                        t = msg.t_ns
                        _wait_motor(sub, got, lambda m, t=t: m.cause_t_ns == t)
                assert wait_recorded(lambda: [rec], len(sent)) == len(sent)
                rc_core = stop(core, 30)
                status = _last_status(sub)
        finally:
            rc_rec = stop(recorder, 30)
            rc_core = stop(core, 30)
    assert rc_rec == 0 and rc_core == 0, (recorder.stderr.read(), core.stderr.read())
    return rec, sent, got, status


def _last_status(sub: Subscriber) -> Status:
    """The core's closing status (published as it stops)."""
    last = None
    while True:
        msgs = sub.recv_many(2.0)
        if not msgs:
            assert last is not None, "no status from the core"
            return last
        last = next((m for m in reversed(msgs) if isinstance(m, Status)), last)


@pytest.mark.parametrize("window_ms", [0.0, 20.0])  # the compiled path; the reorder window
def test_recorded_live_run_with_duplicate_loss_and_restart_replays_offline_exactly(
    tmp_path, window_ms
):
    graph = small_graph(tmp_path / "g.npz")
    rec, sent, got, status = _live_run(tmp_path, graph, window_ms)
    t_first = sent[0][1].t_ns
    live = _distinct([(m.cause_t_ns, m.values.tolist()) for m in got if m.cause_t_ns >= t_first])
    # what y = 0.5 x must have gone through: the duplicate dropped, the lost batch restored
    # at the heartbeat, the restarted driver's input from zero
    assert [v for _, v in live] == [
        [2.0, 0.0, 0.0, 0.0],
        [2.0, 1.0, 0.0, 0.0],
        [2.0, 1.0, 3.0, 0.0],
        [3.0, 1.0, 3.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        [0.5, 0.0, 0.0, 1.0],
        [0.5, -1.5, 0.0, 1.0],
    ], live
    off = replay_offline(rec, graph, keep_motor=True)
    offline = _distinct([(m.cause_t_ns, m.values.tolist()) for m in off.motor])
    assert offline == live  # bit-identical values, the same causes, in the same order
    assert off.bad_batches == {"duplicate": 1} and off.n_resyncs == 1
    # the live core took the compiled path for in-order batches that arrived alone
    # (without a reorder window: a batch right behind a heartbeat is drained with the
    # backlog, on the Python path), the Python path for the rest
    n_compiled = status.metrics["totals"]["n_compiled"]
    assert (n_compiled >= 1) if window_ms == 0 else (n_compiled == 0), n_compiled
    assert status.metrics["drops"] == {"duplicate": 1}
