"""A small numpy decoder for Prophesee EVT 3.0 ``.raw`` files.

A file is an ASCII header (lines starting with ``%``, ended by ``% end``) followed by
little-endian 16-bit words whose 4 most significant bits give the type:

====  ============  =====================================================================
0x0   EVT_ADDR_Y    y (bits 0-10), sets the current row
0x2   EVT_ADDR_X    x (bits 0-10), polarity (bit 11): one event at (x, y, t)
0x3   VECT_BASE_X   x (bits 0-10), polarity (bit 11): base for the vector words
0x4   VECT_12       12-bit mask: events at base_x + i for set bit i; base_x += 12
0x5   VECT_8        8-bit mask: events at base_x + i; base_x += 8
0x6   TIME_LOW      bits 0-11 of the 24-bit microsecond time base
0x8   TIME_HIGH     bits 12-23 of the time base (a fall by > half its range: 2**24 µs wrap)
0xA   EXT_TRIGGER   counted, not decoded further; 0x7/0xE/0xF (continued/others) skipped
====  ============  =====================================================================

Decoding is vectorised per chunk (forward-filling the decoder state over word indices);
the state carries across chunks, so a file is read in bounded memory. Events before the
first TIME_HIGH and ADDR_Y words are dropped and counted (the state is unknown). Decoded
time never goes backwards (see :meth:`Evt3Decoder._time`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikefuse.errors import LogFileError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])

ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8, TIME_LOW, TIME_HIGH, EXT_TRIGGER = (
    0x0,
    0x2,
    0x3,
    0x4,
    0x5,
    0x6,
    0x8,
    0xA,
)
_WRAP_US = 1 << 24
_HALF_LOW = 1 << 11
"""A TIME_LOW falling by more than this (half the 12-bit range) is a left-out TIME_HIGH."""
_HALF_HIGH = 1 << 11
"""A TIME_HIGH falling by more than this (half its 12-bit range) is a 2**24 µs wrap."""


@dataclass
class Evt3Header:
    width: int | None
    height: int | None
    lines: list[str]
    data_offset: int


def read_header(path: Path) -> Evt3Header:
    """Parse the ``%`` header: geometry from ``% geometry WxH`` or ``% format
    EVT3;height=H;width=W``; a header naming another format is an error."""
    lines: list[str] = []
    offset = 0
    try:
        with open(path, "rb") as f:
            while True:
                pos = f.tell()
                line = f.readline()
                if not line.startswith(b"%"):
                    offset = pos
                    break
                text = line.decode("ascii", errors="replace").rstrip("\r\n")
                lines.append(text)
                if text.strip() == "% end":
                    offset = f.tell()
                    break
    except OSError as exc:
        raise LogFileError(f"{path}: cannot read: {exc}") from None
    header = "\n".join(lines)
    width = height = None
    if m := re.search(r"^% geometry (\d+)x(\d+)", header, re.M):
        width, height = int(m.group(1)), int(m.group(2))
    if m := re.search(r"^% format (\S+)", header, re.M):
        fmt = m.group(1)
        if not fmt.upper().startswith("EVT3"):
            raise LogFileError(f"{path}: header says format {fmt.split(';')[0]}, not EVT3")
        if (mw := re.search(r"width=(\d+)", fmt)) and (mh := re.search(r"height=(\d+)", fmt)):
            width, height = int(mw.group(1)), int(mh.group(1))
    if m := re.search(r"^% evt (\S+)", header, re.M):
        if not m.group(1).startswith("3"):
            raise LogFileError(f"{path}: header says evt {m.group(1)}, not 3.0")
    return Evt3Header(width, height, lines, offset)


def _ffill(idx_valid: np.ndarray, n: int) -> np.ndarray:
    """For each position, the index of the last valid position at or before it (-1: none)."""
    marks = np.full(n, -1, np.int64)
    marks[idx_valid] = idx_valid
    return np.maximum.accumulate(marks)


class Evt3Decoder:
    """Stateful decoder: :meth:`decode` takes a chunk of uint16 words, returns events."""

    def __init__(self) -> None:
        self.y = -1
        self.time_high = -1
        self.time_low = 0
        self.n_wraps = 0
        self.implicit = 0  # high increments inferred since the last explicit TIME_HIGH
        self.high_since_low = False  # a TIME_HIGH came after the last TIME_LOW
        self.base_x = -1
        self.base_p = 0
        self.n_triggers = 0
        self.n_dropped_no_state = 0
        self.n_words = 0
        self.n_high_words = 0
        self.t_max = -1
        self.n_time_clamped = 0
        """events whose decoded time was behind an earlier one and was raised to it"""
        self._raw_t = np.empty(0, np.int64)

    def decode(self, words: np.ndarray) -> np.ndarray:
        w = np.asarray(words, dtype=np.uint16).astype(np.int64)
        n = w.size
        self.n_words += n
        if n == 0:
            return np.empty(0, EVENT_DTYPE)
        kind = w >> 12
        payload = w & 0xFFF
        self.n_triggers += int(np.count_nonzero(kind == EXT_TRIGGER))

        y = self._fill(kind == ADDR_Y, payload & 0x7FF, self.y)
        t_us = self._time(kind, payload)

        # vector base: base_x at each word = last VECT_BASE_X + increments since it
        inc = np.where(kind == VECT_12, 12, np.where(kind == VECT_8, 8, 0))
        cum_ex = np.cumsum(inc) - inc
        is_base = kind == VECT_BASE_X
        last_base = _ffill(np.flatnonzero(is_base), n)
        has_base = last_base >= 0
        base_x = np.where(
            has_base,
            (payload & 0x7FF)[np.maximum(last_base, 0)] + cum_ex - cum_ex[np.maximum(last_base, 0)],
            self.base_x + cum_ex if self.base_x >= 0 else -1,
        )
        base_p = np.where(has_base, (payload >> 11)[np.maximum(last_base, 0)] & 1, self.base_p)

        # single events
        single = np.flatnonzero(kind == ADDR_X)
        ev_word = [single]
        ev_x = [payload[single] & 0x7FF]
        ev_p = [(payload[single] >> 11) & 1]
        ev_bit = [np.zeros(single.size, np.int64)]
        # vector events
        for vkind, nbits in ((VECT_12, 12), (VECT_8, 8)):
            vw = np.flatnonzero(kind == vkind)
            if vw.size:
                bits = (payload[vw, None] >> np.arange(nbits)) & 1
                wi, bi = np.nonzero(bits)
                words_i = vw[wi]
                ok = base_x[words_i] >= 0
                self.n_dropped_no_state += int(np.count_nonzero(~ok))
                ev_word.append(words_i[ok])
                ev_x.append(base_x[words_i[ok]] + bi[ok])
                ev_p.append(base_p[words_i[ok]])
                ev_bit.append(bi[ok])
        word_i = np.concatenate(ev_word)
        order = np.lexsort((np.concatenate(ev_bit), word_i))
        word_i = word_i[order]
        x = np.concatenate(ev_x)[order]
        p = np.concatenate(ev_p)[order]
        ok = (y[word_i] >= 0) & (t_us[word_i] >= 0)
        self.n_dropped_no_state += int(np.count_nonzero(~ok))
        out = np.empty(int(np.count_nonzero(ok)), EVENT_DTYPE)
        out["t"] = t_us[word_i[ok]]
        self.n_time_clamped += int(np.count_nonzero(self._raw_t[word_i[ok]] < out["t"]))
        out["x"] = x[ok]
        out["y"] = y[word_i[ok]]
        out["p"] = p[ok]

        # carry the state to the next chunk
        self.y = int(y[-1])
        self.base_x = int(base_x[-1] + inc[-1]) if base_x[-1] >= 0 else -1
        self.base_p = int(base_p[-1])
        return out

    def _fill(self, mask: np.ndarray, values: np.ndarray, initial: int) -> np.ndarray:
        last = _ffill(np.flatnonzero(mask), mask.size)
        return np.where(last >= 0, values[np.maximum(last, 0)], initial)

    def _time(self, kind: np.ndarray, payload: np.ndarray) -> np.ndarray:
        """Microsecond time of every word (-1 before the first TIME_HIGH), unwrapped and
        never going backwards.

        ``time = high << 12 | low``; explicit TIME_HIGH words are trusted. A TIME_HIGH more
        than half its range below the previous one starts a new 2**24 µs epoch. A TIME_LOW
        below the previous TIME_LOW with no TIME_HIGH in between is taken as a left-out
        TIME_HIGH (the high part advances by one until the next explicit TIME_HIGH) only
        when it falls by more than half the 12-bit range, or when the writer has not shown
        that it writes TIME_HIGH words (fewer than two so far: some tools write only the
        first one; so in a stream's first 4096 µs, before its second TIME_HIGH, a stray
        backward TIME_LOW still reads as one). Whatever is left, e.g. a stray TIME_LOW a few
        µs back, is clamped to the latest event time emitted and counted in
        ``n_time_clamped``. The result does not depend on how the words are chunked."""
        n = kind.size
        is_high = kind == TIME_HIGH
        is_low = kind == TIME_LOW
        hi_idx = np.flatnonzero(is_high)
        hi_vals = payload[hi_idx]
        prev_hi = np.concatenate(([self.time_high], hi_vals[:-1]))
        wrapped = np.zeros(n, np.int64)
        wrapped[hi_idx] = (prev_hi - hi_vals > _HALF_HIGH) & (prev_hi >= 0)
        wrap_n = self.n_wraps + np.cumsum(wrapped)
        since_hi = self._implicit_highs(is_high, is_low, payload, hi_idx)
        high = self._fill(is_high, payload, self.time_high)
        low = self._fill(is_low, payload, self.time_low)
        t = np.where(high >= 0, ((high + since_hi) << 12) + low + wrap_n * _WRAP_US, -1)
        self.time_high = int(high[-1])
        self.time_low = int(low[-1])
        self.n_wraps = int(wrap_n[-1])
        self.implicit = int(since_hi[-1])
        self.n_high_words += hi_idx.size
        lo_idx = np.flatnonzero(is_low)
        if hi_idx.size or lo_idx.size:
            last_h = hi_idx[-1] if hi_idx.size else -1
            last_l = lo_idx[-1] if lo_idx.size else -1
            self.high_since_low = bool(last_h > last_l)
        # never backwards: the running maximum over the words that carry events (a
        # TIME_HIGH before its TIME_LOW is no event time), carried across chunks
        carries = (kind == ADDR_X) | (kind == VECT_12) | (kind == VECT_8)
        mono = np.maximum(np.maximum.accumulate(np.where(carries, t, -1)), self.t_max)
        self._raw_t = t
        self.t_max = int(mono[-1])
        return np.where(t >= 0, np.maximum(mono, t), -1)

    def _implicit_highs(
        self, is_high: np.ndarray, is_low: np.ndarray, payload: np.ndarray, hi_idx: np.ndarray
    ) -> np.ndarray:
        """High increments inferred since the last explicit TIME_HIGH, at every word."""
        n = is_high.size
        lo_idx = np.flatnonzero(is_low)
        lo_vals = payload[lo_idx]
        prev_lo = np.concatenate(([self.time_low], lo_vals[:-1]))
        n_high_before = np.cumsum(is_high)[lo_idx]
        no_high_between = np.empty(lo_idx.size, bool)
        if lo_idx.size:
            no_high_between[0] = n_high_before[0] == 0 and not self.high_since_low
            no_high_between[1:] = n_high_before[1:] == n_high_before[:-1]
        fall = prev_lo - lo_vals
        writes_highs = self.n_high_words + n_high_before >= 2
        wrap = (fall > _HALF_LOW) | ((fall > 0) & ~writes_highs)
        implicit = np.zeros(n, np.int64)
        implicit[lo_idx] = wrap & no_high_between
        cum_imp = np.cumsum(implicit)
        last_hi = _ffill(hi_idx, n)
        return np.where(
            last_hi >= 0, cum_imp - cum_imp[np.maximum(last_hi, 0)], cum_imp + self.implicit
        )


def iter_events(path: Path, chunk_words: int = 1 << 20) -> Iterator[np.ndarray]:
    """Decoded events of an EVT3 file, chunk by chunk (structured ``EVENT_DTYPE``)."""
    header = read_header(path)
    dec = Evt3Decoder()
    try:
        with open(path, "rb") as f:
            f.seek(header.data_offset)
            while True:
                buf = f.read(chunk_words * 2)
                if not buf:
                    return
                if len(buf) % 2:
                    raise LogFileError(f"{path}: truncated: odd number of data bytes")
                yield dec.decode(np.frombuffer(buf, "<u2"))
    except OSError as exc:
        raise LogFileError(f"{path}: cannot read: {exc}") from None
