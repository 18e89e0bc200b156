"""Sequence numbers per stream (pure Python, no zmq): the one rule, and a counter of it.

Every sender numbers each stream's messages 0, 1, 2, ... (``seq``). One PUB socket never
reorders, so a receiver reads a stream's next seq against the last one it saw with one rule,
:func:`seq_step`:

- the stream's first message, or ``last + 1``: in order (``IN_ORDER``);
- ``seq > last + 1``: ``seq - last - 1`` messages were lost on the way (``GAP``);
- ``seq == last``: the same message again (``DUPLICATE``);
- ``seq < last``: the sender restarted, its counter began again (``BACK``).

Two receivers apply it, and differ only in what they do with the verdict:

- :class:`SeqTracker` (subscriber, recorder, ``spikefuse info``) only counts: messages
  missing per stream, and "resets" (a seq that did not advance: duplicates and restarts
  together); the message is delivered whatever the verdict.
- The fusion core's inputs (``spikefuse.core.inputs.InputSet.check_seq``) act on it: a
  duplicate is dropped (applying it twice would double its counts), a restart resets the
  input (the new driver's encoder starts from zero), a gap is counted once per jump (what
  was lost comes back with the next heartbeat's totals, a keyframe, so the missing number
  matters less than that it happened). The compiled per-message path takes only
  ``IN_ORDER`` batches and leaves every other verdict to that Python code.
"""

from __future__ import annotations

from enum import IntEnum


class SeqStep(IntEnum):
    """What a stream's next seq is, against the last one seen (see :func:`seq_step`)."""

    IN_ORDER = 0
    GAP = 1
    DUPLICATE = 2
    BACK = 3


IN_ORDER, GAP, DUPLICATE, BACK = SeqStep


def seq_step(last: int | None, seq: int) -> SeqStep:
    """The rule: ``seq`` of a stream whose last seq seen was ``last`` (None: its first)."""
    if last is None or seq == last + 1:
        return IN_ORDER
    if seq > last:
        return GAP
    return DUPLICATE if seq == last else BACK


def advances(last: int, seq: int) -> bool:
    """``seq`` comes after ``last`` on one sender's count (in order or after a gap): batches
    may be merged across it (the ``coalesce`` queue policy), never across a restart."""
    return seq_step(last, seq) <= GAP


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
        step = seq_step(last, seq)
        if step == IN_ORDER:
            return 0
        if step == GAP:
            missing = seq - last - 1  # type: ignore[operator]
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
