"""Monotonic deadlines and an interruptible wait.

* :class:`Pacer`: deadlines ``start + k*period`` on ``time.monotonic_ns`` (never drifting);
  when the caller is late by more than a period, the missed ticks are skipped and counted.
* :class:`StopSignal`: SIGINT/SIGTERM set a flag and wake up any :meth:`StopSignal.wait`
  at once (through ``signal.set_wakeup_fd`` on a socket pair), so a driver blocked until
  its next deadline stops immediately.
"""

from __future__ import annotations

import contextlib
import logging
import select
import signal
import socket
import threading
import time

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000


def period_ns_of(rate_hz: float) -> int:
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, found {rate_hz}")
    return max(1, round(NS_PER_S / rate_hz))


class Pacer:
    """Deadlines ``start_ns + k*period_ns``.

    :meth:`advance` moves to the next tick; if that tick is already more than one period in
    the past (``now_ns`` given), the ticks in between are skipped and counted in
    ``n_skipped``. :meth:`defer` postpones the next tick (a retry backoff) and
    :meth:`resync` puts the schedule back on its grid after it."""

    __slots__ = ("start_ns", "period_ns", "k", "n_skipped", "_deferred_ns")

    def __init__(self, period_ns: int, start_ns: int):
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, found {period_ns}")
        self.start_ns = int(start_ns)
        self.period_ns = int(period_ns)
        self.k = 0
        self.n_skipped = 0
        self._deferred_ns: int | None = None

    @property
    def deadline_ns(self) -> int:
        if self._deferred_ns is not None:
            return self._deferred_ns
        return self.start_ns + self.k * self.period_ns

    @property
    def deferred(self) -> bool:
        """True while the next tick is a deferral (a retry after a failure)."""
        return self._deferred_ns is not None

    def advance(self, now_ns: int | None = None) -> int:
        """Go to the next tick and return its deadline."""
        self._deferred_ns = None
        self.k += 1
        if now_ns is not None:
            behind = (now_ns - self.deadline_ns) // self.period_ns
            if behind >= 1:
                self.k += behind
                self.n_skipped += behind
        return self.deadline_ns

    def defer(self, until_ns: int) -> None:
        self._deferred_ns = int(until_ns)

    def resync(self, now_ns: int) -> None:
        """After a deferral: the next tick is the first grid tick at or after ``now_ns``
        (the ticks missed meanwhile are not counted as skips: the sensor was down)."""
        self._deferred_ns = None
        self.k = max(self.k, -(-(now_ns - self.start_ns) // self.period_ns))


class StopSignal:
    """Context manager: installs SIGINT/SIGTERM handlers (main thread only) that request a
    stop; :meth:`wait` sleeps until a timeout or a stop request, whichever comes first.
    :meth:`request` stops from code (another thread, a test, ``duration_s``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup: int | None = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._old_wakeup = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
            for sig in self.SIGNALS:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old_handlers.clear()
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._old_wakeup = None
        self._rsock.close()
        self._wsock.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.requested = True
        self.signum = signum

    def request(self) -> None:
        self.requested = True
        with contextlib.suppress(OSError):
            self._wsock.send(b"\0")

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; returns True if a stop was requested."""
        if self.requested:
            return True
        if timeout_s > 0:
            readable, _, _ = select.select([self._rsock], [], [], timeout_s)
            if readable:
                with contextlib.suppress(OSError):
                    while self._rsock.recv(4096):
                        pass
        return self.requested


def monotonic_ns() -> int:
    return time.monotonic_ns()
