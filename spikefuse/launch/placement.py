"""CPU placement of a launched process: ``cpu`` (the CPUs it may run on) and ``sched``
(its scheduling policy and real-time priority), applied in the child between fork and exec
so the whole process, every thread it starts later included, runs that way.

A refusal by the OS (``EPERM``: SCHED_FIFO/RR without CAP_SYS_NICE or an RLIMIT_RTPRIO high
enough; ``EINVAL``: CPUs this launch may not use) stops that start with a message naming
the launch file line, the field and the reason; it never goes unnoticed."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from spikefuse.config import StrictModel

POLICIES = {
    "other": os.SCHED_OTHER,
    "fifo": os.SCHED_FIFO,
    "rr": os.SCHED_RR,
    "batch": os.SCHED_BATCH,
    "idle": os.SCHED_IDLE,
}
MAX_CPU = 4095


class SchedSpec(StrictModel):
    """``policy``: other (the default time-sharing), fifo / rr (real time, ``priority``
    1-99), batch (throughput), idle (only when nothing else runs)."""

    policy: Literal["other", "fifo", "rr", "batch", "idle"] = "other"
    priority: int = Field(0, ge=0, le=99)

    @model_validator(mode="after")
    def _priority(self) -> SchedSpec:
        if self.policy in ("fifo", "rr") and self.priority == 0:
            raise ValueError(f"policy {self.policy} needs a priority of 1-99")
        if self.policy not in ("fifo", "rr") and self.priority:
            raise ValueError(
                f"priority applies to the fifo and rr policies only; {self.policy} takes 0, "
                f"found {self.priority}"
            )
        return self


def check_cpus(cpus: list[int] | None) -> list[int] | None:
    """The ``cpu`` field: a non-empty list of distinct CPU numbers."""
    if cpus is None:
        return None
    if not cpus:
        raise ValueError("expected at least one CPU number, e.g. [0]")
    bad = [c for c in cpus if not 0 <= c <= MAX_CPU]
    if bad:
        raise ValueError(f"CPU numbers are 0-{MAX_CPU}, found {bad}")
    if len(set(cpus)) != len(cpus):
        raise ValueError(f"a CPU is listed twice in {cpus}")
    return cpus


def _cpu_list(cpus: set[int] | list[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


class Placement:
    """The ``preexec_fn`` of one start: ``before`` (e.g. PR_SET_PDEATHSIG), then affinity,
    then the scheduler. Use as a context manager around ``Popen``; after it, :meth:`refusal`
    is the reason the child could not be placed (None when it was)."""

    def __init__(
        self,
        cpus: list[int] | None,
        sched: SchedSpec | None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.cpus = cpus
        self.sched = sched
        self.before = before
        self._r = self._w = -1

    def __enter__(self) -> Placement:
        self._r, self._w = os.pipe()
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1

    def __call__(self) -> None:  # in the child, between fork and exec
        if self.before is not None:
            self.before()
        field = "cpu"
        try:
            if self.cpus is not None:
                os.sched_setaffinity(0, self.cpus)
            if self.sched is not None:
                field = "sched"
                policy = POLICIES[self.sched.policy]
                os.sched_setscheduler(0, policy, os.sched_param(self.sched.priority))
        except OSError as exc:
            os.write(self._w, f"{field}\0{self._explain(field, exc)}".encode())
            raise

    def _explain(self, field: str, exc: OSError) -> str:
        name = errno.errorcode.get(exc.errno or 0, "?")
        what = f"the OS refused it: {exc.strerror} ({name})"
        if field == "cpu":
            allowed = _cpu_list(os.sched_getaffinity(0))
            return (
                f"cannot run on CPU {_cpu_list(self.cpus or [])}: {what}; allowed here: {allowed}"
            )
        s = self.sched
        text = f"cannot use policy {s.policy} priority {s.priority}: {what}"  # type: ignore[union-attr]
        if exc.errno == errno.EPERM:
            text += (
                "; real-time policies need CAP_SYS_NICE (root, or `setcap cap_sys_nice+ep` on "
                "the interpreter) or an RLIMIT_RTPRIO at least this high (limits.conf "
                "`rtprio`); in a container also `--cap-add SYS_NICE`"
            )
        return text

    def refusal(self) -> tuple[str, str] | None:
        """(field, reason) written by a child that could not be placed (call after Popen)."""
        if self._w >= 0:
            os.close(self._w)
            self._w = -1
        os.set_blocking(self._r, False)
        try:
            data = os.read(self._r, 4096)
        except BlockingIOError:
            return None
        if not data:
            return None
        field, _, reason = data.decode("utf-8", "replace").partition("\0")
        return field, reason
