"""Helpers shared by the driver/SDK tests: start a driver as a real child process, collect
what a real Subscriber receives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikefuse.protocol import EventBatch, Heartbeat, Message, Status
from spikefuse.transport.subscriber import Subscriber


@dataclass
class Received:
    batches: list[EventBatch] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)

    def add(self, msg: Message) -> None:
        if isinstance(msg, EventBatch):
            self.batches.append(msg)
        elif isinstance(msg, Heartbeat):
            self.heartbeats.append(msg)
        elif isinstance(msg, Status):
            self.statuses.append(msg)

    def of(self, input_name: str) -> list[EventBatch]:
        return [b for b in self.batches if b.input == input_name]

    def sums(self, input_name: str, n_channels: int) -> np.ndarray:
        """Receiver-side integral: the sum of counts per channel of one input."""
        total = np.zeros(n_channels, np.int64)
        for b in self.of(input_name):
            np.add.at(total, b.channels.astype(np.int64), b.counts)
        return total


def collect(
    sub: Subscriber,
    into: Received,
    until: Callable[[Received], bool],
    timeout_s: float,
) -> bool:
    """Receive into ``into`` until ``until(into)`` or the timeout; True if the condition held."""
    deadline = time.monotonic() + timeout_s
    while not until(into):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        msg = sub.recv(min(remaining, 0.2))
        if msg is not None:
            into.add(msg)
    return True


def drain(sub: Subscriber, into: Received, quiet_s: float = 0.3) -> None:
    """Receive until nothing arrives for ``quiet_s``."""
    while (msg := sub.recv(quiet_s)) is not None:
        into.add(msg)


def start_driver(
    kind: str, config: Path | None, *overrides: str, cwd: Path | None = None
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "driver", kind]
    if config is not None:
        cmd += ["--config", str(config)]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )


STOP_WITHIN_S = 5.0
"""How soon a signalled driver must have exited in these tests. A driver needs a few
milliseconds of CPU to flush, send its last heartbeat and exit; on a 2-core machine at load
12-18 that took up to 3.4 s of wall time (measured), so the bound is wide. A stop that
hangs (a blocking call that ignores the signal) still fails it."""


def stop_driver(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, float, str]:
    """Send ``sig``; return (exit code, seconds to exit, stderr)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -999, time.monotonic() - t0, err.decode(errors="replace")
    return proc.returncode, time.monotonic() - t0, err.decode(errors="replace")


def run_in_thread(spec, cfg, timeout_s: float = 60.0) -> tuple[Received, list[float]]:
    """Run a driver in a thread (signals are not touched off the main thread) and collect
    what a real Subscriber on ``cfg.endpoint`` receives until the driver has finished.
    Returns the messages and their receive times (monotonic s)."""
    from spikefuse.sdk import run_driver

    got, recv_s = Received(), []
    errors: list[BaseException] = []

    def target():
        try:
            run_driver(spec, cfg)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    with Subscriber(cfg.endpoint, max_queue=1_000_000) as sub:
        th = threading.Thread(target=target, daemon=True)
        th.start()
        deadline = time.monotonic() + timeout_s
        while th.is_alive() and time.monotonic() < deadline:
            for msg in sub.recv_many(0.05):
                got.add(msg)
                recv_s.append(time.monotonic())
        th.join(1.0)
        assert not th.is_alive(), "the driver did not finish"
        drain(sub, got, 0.2)
    if errors:
        raise errors[0]
    return got, recv_s
