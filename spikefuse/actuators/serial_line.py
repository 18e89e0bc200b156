"""``serial`` actuator: a line protocol over a serial port (pyserial).

Protocol (ASCII, one message per line, ``\\r\\n`` terminated; NMEA-style checksum: ``HH`` is
the XOR of every byte between the leading ``$`` and the ``*``, as two upper-case hex digits)::

    host -> device   $SET,<seq>,<v0>,<v1>,...*HH     set-points (values as %.6g)
    host -> device   $SAFE,<v0>,<v1>,...*HH          deadman / shutdown: go to safe values
    device -> host   $ACK,<seq>*HH                   optional acknowledgement
    device -> host   $ERR,<text>*HH                  optional device error report

A device should itself go to safe values if no line arrives for its own timeout. Replies
are optional; they are counted (``n_acks``, ``n_errors``) and malformed lines are counted
(``n_bad_lines``) and logged, never fatal.
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from spikefuse.actuators.base import Actuator, ActuatorConfig, register_actuator
from spikefuse.errors import ConfigError, SensorError

log = logging.getLogger(__name__)

MAX_LINE = 4096


def checksum(body: bytes) -> str:
    c = 0
    for b in body:
        c ^= b
    return f"{c:02X}"


def format_line(kind: str, fields: list[str]) -> bytes:
    body = ",".join([kind, *fields]).encode("ascii")
    return b"$" + body + b"*" + checksum(body).encode("ascii") + b"\r\n"


def parse_line(line: bytes) -> tuple[str, list[str]]:
    """``(kind, fields)`` of one line; raises ValueError naming the problem."""
    line = line.strip()
    if not line.startswith(b"$") or b"*" not in line:
        raise ValueError(f"not a $...*HH line: {line[:60]!r}")
    body, _, ck = line[1:].rpartition(b"*")
    if ck.decode("ascii", "replace").upper() != checksum(body):
        raise ValueError(f"bad checksum {ck!r} (expected {checksum(body)}) in {line[:60]!r}")
    parts = body.decode("ascii", "replace").split(",")
    return parts[0], parts[1:]


class SerialConfig(ActuatorConfig):
    port: str = Field(min_length=1)
    baudrate: int = Field(115200, gt=0)
    write_timeout_s: float = Field(0.05, gt=0.0, le=10.0)


@register_actuator("serial", SerialConfig)
class SerialActuator(Actuator):
    """Sends set-points over a serial port with a checksummed line protocol."""

    def __init__(self, cfg: SerialConfig):
        super().__init__(cfg)
        import serial

        self._serial_mod = serial
        try:
            self.port = serial.Serial(
                cfg.port, cfg.baudrate, timeout=0, write_timeout=cfg.write_timeout_s
            )
        except (serial.SerialException, OSError) as exc:
            raise ConfigError(f"cannot open serial port {cfg.port}: {exc}", "port") from None
        self._rx = bytearray()
        self.n_lines = 0
        self.n_acks = 0
        self.n_errors = 0
        self.n_bad_lines = 0
        self.n_write_errors = 0
        self.last_ack_seq = -1

    def apply(
        self,
        values: np.ndarray,
        *,
        safe: bool,
        seq: int,
        cause_t_ns: int,
        t_ns: int,
        refresh: bool = False,
    ) -> None:
        vals = [f"{float(v):.6g}" for v in values]
        line = format_line("SAFE", vals) if safe else format_line("SET", [str(seq), *vals])
        try:
            self.port.write(line)
            self.port.flush()
            self.n_lines += 1
        except (self._serial_mod.SerialException, OSError) as exc:
            self.n_write_errors += 1
            log.warning("serial %s: write failed: %s", self.cfg.port, exc)

    def service(self, now_ns: int) -> None:
        try:
            data = self.port.read(65536)
        except (self._serial_mod.SerialException, OSError) as exc:
            raise SensorError(f"serial {self.cfg.port}: read failed: {exc}") from None
        if not data:
            return
        self._rx += data
        while b"\n" in self._rx:
            line, _, rest = bytes(self._rx).partition(b"\n")
            self._rx = bytearray(rest)
            self._reply(line)
        if len(self._rx) > MAX_LINE:
            self.n_bad_lines += 1
            log.warning(
                "serial %s: reply line longer than %d bytes dropped", self.cfg.port, MAX_LINE
            )
            self._rx.clear()

    def _reply(self, line: bytes) -> None:
        try:
            kind, fields = parse_line(line)
            if kind == "ACK":
                self.last_ack_seq = int(fields[0])
                self.n_acks += 1
            elif kind == "ERR":
                self.n_errors += 1
                log.warning("serial %s: device error: %s", self.cfg.port, ",".join(fields))
            else:
                raise ValueError(f"unknown reply kind {kind!r}")
        except (ValueError, IndexError) as exc:
            self.n_bad_lines += 1
            log.warning("serial %s: bad reply: %s", self.cfg.port, exc)

    def metrics(self) -> dict[str, object]:
        return {
            "n_lines": self.n_lines,
            "n_acks": self.n_acks,
            "n_errors": self.n_errors,
            "n_bad_lines": self.n_bad_lines,
            "n_write_errors": self.n_write_errors,
        }

    def close(self) -> None:
        self.port.close()
