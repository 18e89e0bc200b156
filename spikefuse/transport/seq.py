"""Sequence numbers per stream (pure Python, no zmq): what went missing, what went back.

Every sender numbers each stream's messages 0, 1, 2, ... (``seq``). A receiver that sees
``seq > last + 1`` lost ``seq - last - 1`` messages on the way (a *gap*); ``seq <= last``
means the sender restarted (its counter began again) or sent a duplicate (a *reset*)."""

from __future__ import annotations


class SeqTracker:
    """Counts gaps and resets per stream; :meth:`see` is called once per received message."""

    __slots__ = ("_last", "gaps", "resets")

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self.gaps: dict[str, int] = {}
        """stream -> number of messages missing according to sequence numbers"""
        self.resets: dict[str, int] = {}
        """stream -> number of times seq did not advance (sender restarted, or duplicates)"""

    def see(self, stream: str, seq: int) -> int:
        """Record ``seq`` of ``stream``: the number of messages missing just before it (0 in
        order or for the stream's first message; -1 when seq did not advance)."""
        last = self._last.get(stream)
        self._last[stream] = seq
        if last is None or seq == last + 1:
            return 0
        if seq > last:
            missing = seq - last - 1
            self.gaps[stream] = self.gaps.get(stream, 0) + missing
            return missing
        self.resets[stream] = self.resets.get(stream, 0) + 1
        return -1

    def last(self, stream: str) -> int | None:
        """The newest seq seen on ``stream`` (None before its first message)."""
        return self._last.get(stream)

    @property
    def n_missing(self) -> int:
        return sum(self.gaps.values())

    @property
    def n_resets(self) -> int:
        return sum(self.resets.values())
