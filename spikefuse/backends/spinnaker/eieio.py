"""Bus counts -> EIEIO spike packets for the board's SpikeInjector populations.

Key allocation: graph input ``x`` is two injector populations, ``x+`` and ``x-``; channel
``c`` with a positive count is atom ``c`` of ``x+``, with a negative count atom ``c`` of
``x-``. Atom ids travel as 16-bit keys (the injector adds its routing base key on the board, as
for the live connection's ``send_spikes``); :meth:`InputKeys.full_key` gives the routed
32-bit key when the base keys of a mapping are known.

A count ``n`` is ``|n|`` spikes: either the key repeated ``|n|`` times (what an injector
turns into ``|n|`` multicast spikes) or one key with a 32-bit payload ``|n|`` (half the
bytes for large counts; for receivers that read payloads as counts). Packet limits of the
256-byte EIEIO data message: 63 keys of 32 bits, 127 keys of 16 bits, 31 key+payload pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from spinnman.messages.eieio import EIEIOType, read_eieio_data_message
from spinnman.messages.eieio.data_messages import (
    EIEIODataMessage,
    KeyDataElement,
    KeyPayloadDataElement,
)

MAX_KEYS_32 = 63
MAX_KEYS_16 = 127
MAX_KEY_PAYLOADS_32 = 31
Encoding = Literal["repeat", "payload"]


@dataclass(frozen=True)
class InputKeys:
    """Key allocation of a graph's inputs (see the module doc)."""

    sizes: dict[str, int]

    def labels(self, name: str) -> tuple[str, str]:
        return f"{name}+", f"{name}-"

    def key(self, name: str, channel: int, count: int) -> tuple[str, int]:
        """(injector label, atom id) of a nonzero count on ``name[channel]``."""
        size = self.sizes.get(name)
        if size is None:
            raise ValueError(f"unknown input '{name}'; inputs are {sorted(self.sizes)}")
        if not 0 <= channel < size:
            raise ValueError(f"channel {channel} out of range for input '{name}' of size {size}")
        if count == 0:
            raise ValueError("a zero count sends no spike")
        return self.labels(name)[0 if count > 0 else 1], channel

    def decode(self, label: str, atom: int) -> tuple[str, int, int]:
        """(input, channel, sign) of an injector atom: the inverse of :meth:`key`."""
        name, sign = label[:-1], label[-1]
        if sign not in "+-" or name not in self.sizes or not 0 <= atom < self.sizes[name]:
            raise ValueError(f"'{label}' atom {atom} is not an input key")
        return name, atom, 1 if sign == "+" else -1

    @staticmethod
    def full_key(base_key: int, atom: int) -> int:
        return base_key | atom


def packets(
    channels: np.ndarray,
    counts: np.ndarray,
    encoding: Encoding = "repeat",
    key_bits: Literal[16, 32] = 32,
) -> Iterator[EIEIODataMessage]:
    """EIEIO data messages carrying ``counts`` on atoms ``channels`` (all one sign)."""
    if encoding == "payload":
        yield from _chunks(
            EIEIOType.KEY_PAYLOAD_32_BIT,
            MAX_KEY_PAYLOADS_32,
            [
                KeyPayloadDataElement(int(c), abs(int(n)))
                for c, n in zip(channels, counts, strict=True)
            ],
        )
        return
    if key_bits == 16 and channels.size and int(channels.max()) >= 1 << 16:
        raise ValueError("16-bit keys hold atoms below 65536")
    keys = np.repeat(np.asarray(channels, np.int64), np.abs(np.asarray(counts, np.int64)))
    typ, limit = (
        (EIEIOType.KEY_16_BIT, MAX_KEYS_16)
        if key_bits == 16
        else (EIEIOType.KEY_32_BIT, MAX_KEYS_32)
    )
    yield from _chunks(typ, limit, [KeyDataElement(int(k)) for k in keys])


def _chunks(typ: EIEIOType, limit: int, elements: Sequence) -> Iterator[EIEIODataMessage]:
    for i in range(0, len(elements), limit):
        msg = EIEIODataMessage.create(typ)
        for e in elements[i : i + limit]:
            msg.add_element(e)
        yield msg


def batch_packets(
    keys: InputKeys,
    name: str,
    channels: np.ndarray,
    counts: np.ndarray,
    encoding: Encoding = "repeat",
    key_bits: Literal[16, 32] = 16,
) -> list[tuple[str, EIEIODataMessage]]:
    """(injector label, message) pairs for one bus batch into input ``name``.

    16-bit keys are atom ids (the injector adds its base key: what the live connection
    sends for ``send_full_keys=False``); 32-bit keys and key+payload pairs are taken as
    full routing keys by the injector, so they need the atoms mapped with
    :meth:`InputKeys.full_key` first."""
    ch = np.asarray(channels, np.int64)
    ct = np.asarray(counts, np.int64)
    for c in ch[(ch < 0) | (ch >= keys.sizes.get(name, 0))][:1].tolist():
        keys.key(name, int(c), 1)  # raises with the input's name and size
    out = []
    for sign, label in zip((1, -1), keys.labels(name), strict=True):
        sel = ct * sign > 0
        if sel.any():
            out += [(label, m) for m in packets(ch[sel], ct[sel], encoding, key_bits)]
    return out


def parse(data: bytes) -> list[tuple[int, int | None]]:
    """(key, payload or None) of every element of an EIEIO data message, parsed with
    spinnman's own reader."""
    msg = read_eieio_data_message(data, 0)
    out = []
    while msg.is_next_element:
        e = msg.next_element
        out.append((int(e.key), int(e.payload) if hasattr(e, "payload") else None))
    return out


def counts_of(elements: list[tuple[int, int | None]]) -> dict[int, int]:
    """Spikes per atom of parsed elements (a payload is a count, a bare key one spike)."""
    out: dict[int, int] = {}
    for k, p in elements:
        out[k] = out.get(k, 0) + (1 if p is None else p)
    return out
