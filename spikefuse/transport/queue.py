"""Per-stream queue policies of a receiver (pure Python, no zmq): ``keep`` and ``coalesce``."""

from __future__ import annotations

from collections import deque
from typing import Literal

from spikefuse.errors import ConfigError
from spikefuse.protocol import EventBatch, Heartbeat, Message, coalesce_many, stream_of
from spikefuse.transport.seq import advances

Policy = Literal["keep", "coalesce"]

FOLD_EVERY = 64
"""A coalescing slot folds its merged batches into one every this many (bounded memory)."""


class _Slot:
    __slots__ = ("msg", "key", "extra", "open", "last_seq")

    def __init__(self, msg: Message, key: str) -> None:
        self.msg: Message | None = msg
        self.key = key
        self.extra: list[EventBatch] | None = None
        self.last_seq = msg.seq
        """seq of the newest batch merged in (a restarted sender's lower seq never merges)"""
        self.open = True
        """later batches may still merge in (until a heartbeat of its sensor queues up)"""

    def resolve(self) -> Message:
        msg = self.msg
        if self.extra:
            return coalesce_many([msg, *self.extra])  # type: ignore[list-item]
        return msg  # type: ignore[return-value]


class InputQueue:
    """Arrival-ordered queue of received messages with a per-stream policy.

    ``keep``: each stream holds at most ``max_queue`` messages; the oldest is dropped
    (counted in ``n_dropped``). ``coalesce``: an EventBatch arriving while an earlier batch
    of the same stream (same sensor, input and scale) is still queued is merged into it
    (counted in ``n_coalesced``); the merged batch sums counts per channel, so the
    integrated value of every channel is exactly preserved. Batches are not merged across
    a scale change, a sequence number that does not advance (a restarted sender), or a
    Heartbeat of their sensor: its totals count the batches sent before it, so a batch
    sent after it must not be applied before it (the keyframe would undo it)."""

    def __init__(self, policy: Policy = "keep", max_queue: int = 10000) -> None:
        if policy not in ("keep", "coalesce"):
            raise ConfigError(f"queue policy must be 'keep' or 'coalesce', found {policy!r}")
        if max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, found {max_queue}")
        self.policy = policy
        self.max_queue = max_queue
        self.n_dropped = 0
        self.n_coalesced = 0
        self._order: deque[_Slot] = deque()
        self._streams: dict[str, deque[_Slot]] = {}
        self._n_live = 0

    def __len__(self) -> int:
        return self._n_live

    def put(self, msg: Message) -> None:
        key = stream_of(msg)
        if isinstance(msg, Heartbeat) and self.policy == "coalesce":
            self._close_batches_of(msg.sensor)
        sq = self._streams.get(key)
        if sq is None:
            sq = self._streams[key] = deque()
        elif self.policy == "coalesce" and isinstance(msg, EventBatch) and sq and sq[-1].open:
            slot = sq[-1]
            last = slot.msg
            # never across a scale change or a sender restart (seq not advancing)
            if (
                isinstance(last, EventBatch)
                and last.scale == msg.scale
                and advances(slot.last_seq, msg.seq)
            ):
                if slot.extra is None:
                    slot.extra = [msg]
                else:
                    slot.extra.append(msg)
                slot.last_seq = msg.seq
                if len(slot.extra) >= FOLD_EVERY:  # a consumer far behind: memory stays bounded
                    slot.msg, slot.extra = slot.resolve(), None
                self.n_coalesced += 1
                return
        slot = _Slot(msg, key)
        sq.append(slot)
        self._order.append(slot)
        self._n_live += 1
        if len(sq) > self.max_queue:
            old = sq.popleft()
            self.n_dropped += 1 + (len(old.extra) if old.extra else 0)
            old.msg = None
            old.extra = None
            self._n_live -= 1

    def _close_batches_of(self, sensor: str) -> None:
        prefix = f"sensor/{sensor}/"
        for key, sq in self._streams.items():
            if sq and key.startswith(prefix):
                sq[-1].open = False

    def pop(self) -> Message | None:
        while self._order:
            slot = self._order.popleft()
            if slot.msg is None:
                continue
            sq = self._streams[slot.key]
            sq.popleft()
            if not sq:
                del self._streams[slot.key]
            self._n_live -= 1
            return slot.resolve()
        return None

    def pop_all(self) -> list[Message]:
        out = []
        while (m := self.pop()) is not None:
            out.append(m)
        return out
