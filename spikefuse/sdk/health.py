"""Health of a driver: consecutive read failures per key (a group, or ``source``), the state
its heartbeat reports, and the backoff before the next try."""

from __future__ import annotations

import logging
import time

from spikefuse.sdk.config import RetryConfig

log = logging.getLogger(__name__)

STATE_OK = "ok"
STATE_DEGRADED = "degraded"
STATE_FAILED = "failed"


class Health:
    """``failure(key, exc)`` counts a failed read and returns the backoff (seconds) before
    the next try; ``success(key)`` clears the key. ``state`` is ``failed`` when some key has
    failed ``retry.failed_after`` times in a row, ``degraded`` when some key is failing,
    else ``ok``. Errors are logged at most once per key every ``log_interval_s``."""

    def __init__(self, retry: RetryConfig, log_interval_s: float = 5.0):
        self.retry = retry
        self.log_interval_s = log_interval_s
        self.consecutive: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self.n_read_errors = 0
        self.n_recoveries = 0
        self._last_log_s: dict[str, float] = {}

    def failure(self, key: str, exc: BaseException) -> float:
        n = self.consecutive.get(key, 0) + 1
        self.consecutive[key] = n
        self.n_read_errors += 1
        detail = f"{type(exc).__name__}: {exc}"
        self.last_error[key] = detail
        backoff_s = self.retry.backoff_s(n)
        now_s = time.monotonic()
        if now_s - self._last_log_s.get(key, -1e18) >= self.log_interval_s:
            self._last_log_s[key] = now_s
            log.warning(
                "%s: read failed (%d in a row), retrying in %.3g s: %s", key, n, backoff_s, detail
            )
        return backoff_s

    def success(self, key: str) -> None:
        if self.consecutive.pop(key, 0):
            self.n_recoveries += 1
            self.last_error.pop(key, None)
            log.info("%s: recovered", key)

    @property
    def state(self) -> str:
        if not self.consecutive:
            return STATE_OK
        if max(self.consecutive.values()) >= self.retry.failed_after:
            return STATE_FAILED
        return STATE_DEGRADED

    @property
    def detail(self) -> str:
        """What is wrong, one clause per failing key (empty when ok)."""
        return "; ".join(
            f"{key}: {n} consecutive read failures, last: {self.last_error.get(key, '?')}"
            for key, n in sorted(self.consecutive.items())
        )
