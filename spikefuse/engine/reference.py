"""Pure-Python/NumPy reference engine: the test oracle for the Cython engine.

It executes the same :class:`~spikefuse.builder.Model` with the same operation order,
so on the same inputs it produces the same output events (bit-identical for
identity/relu/abs/clip graphs; tanh/sigmoid may differ in the last ulp of libm)."""

from __future__ import annotations

import heapq

import numpy as np

from spikefuse.builder.model import (
    E_CONV,
    E_DENSE,
    E_ELEM,
    E_POOL,
    E_PROD_A,
    K_CONV,
    K_DENSE,
    K_INPUT,
    K_INTEGRATOR,
    K_OUTPUT,
    K_POOL,
    K_PRODUCT,
    Model,
)
from spikefuse.engine.base import EngineBase
from spikefuse.engine.semantics import (
    NEVER_FIRED,
    NO_CROSSING,
    activate,
    integrator_state,
    next_crossing,
    rate_limited,
    round_half_away,
    saturate,
)

ACCUMULATING = frozenset((K_DENSE, K_CONV, K_POOL))  # value = h(acc), as accumulates() in C


class ReferenceEngine(EngineBase):
    """Slow, obviously-correct event-driven executor (same API as :class:`Engine`)."""

    def _init_state(self, m: Model) -> None:
        n_units = m.n_units
        self.sent = np.zeros(n_units, np.int64)
        self.acc = m.unit_bias.copy()
        self.xa = np.zeros(n_units, np.float64)
        self.xb = np.zeros(n_units, np.float64)
        self.y = m.int_y0.copy()
        self.t_last = np.zeros(n_units, np.int64)
        self.direction = np.zeros(n_units, np.int64)
        self.last_dir = np.zeros(n_units, np.int64)
        self.version = np.zeros(n_units, np.int64)
        self.sched = np.full(n_units, NO_CROSSING, np.int64)
        self.t_fire = np.full(n_units, NEVER_FIRED, np.int64)
        self.deferred = np.zeros(n_units, bool)
        self.heap: list[tuple[int, int, int]] = []
        self.node_dirty = np.zeros(m.n_nodes, bool)
        self.unit_dirty = np.zeros(n_units, bool)
        self.dirty_lists: list[list[int]] = [[] for _ in range(m.n_nodes)]
        self.node_all_dirty = np.zeros(m.n_nodes, bool)
        self.spikes = np.zeros(m.n_nodes, np.int64)
        self.syn_ops = 0
        self.n_saturated = 0
        self.n_crossings = 0
        self.spikes_in = 0
        self.out: list[tuple[int, int, int, float]] = []
        self.node_of_unit = np.repeat(np.arange(m.n_nodes), m.node_size)
        self.output_index = {int(n): i for i, n in enumerate(m.output_nodes)}

    # -- core operations ---------------------------------------------------------------
    def _emit(self, s: int, i: int, n: int, t: int) -> None:
        """Unit i of node s sends n (already added to sent); propagate along its edges."""
        m = self.model
        u = int(m.node_off[s]) + i
        self.spikes[s] += abs(n)
        self.syn_ops += abs(n) * int(m.unit_fanout[u])
        if m.node_kind[s] == K_OUTPUT:
            self.out.append((t, self.output_index[s], i, self.sent[u] / m.unit_scale[u]))
            return
        k = m.unit_scale[u]
        for e in range(int(m.edge_ptr[s]), int(m.edge_ptr[s + 1])):
            kind = int(m.edge_kind[e])
            tgt = int(m.edge_target[e])
            r = int(m.edge_in_off[e]) + i
            toff = int(m.node_off[tgt])
            if kind == E_DENSE:
                nt = int(m.node_size[tgt])
                w0 = int(m.node_wptr[tgt]) + r * nt
                d = n / k
                self.acc[toff : toff + nt] += m.weights[w0 : w0 + nt] * d
                self.node_all_dirty[tgt] = True
                self.node_dirty[tgt] = True
            elif kind == E_CONV:
                self._conv_spike(tgt, r, n / k)
            elif kind == E_POOL:
                self._pool_spike(tgt, r, n / k)
            else:
                j = toff + r
                if kind == E_ELEM:
                    self.xa[j] = self.sent[u] / k
                elif kind == E_PROD_A:
                    self.xa[j] = self.sent[u] / k
                else:
                    self.xb[j] = self.sent[u] / k
                self._mark(tgt, j)

    def _mark(self, node: int, j: int) -> None:
        if not self.unit_dirty[j]:
            self.unit_dirty[j] = True
            self.dirty_lists[node].append(j)
        self.node_dirty[node] = True

    def _conv_spike(self, tgt: int, r: int, d: float) -> None:
        m = self.model
        co, ci, kh, kw, h, w, ho, wo, sy, sx, py, px = (int(v) for v in m.node_conv[tgt])
        c, rem = divmod(r, h * w)
        y, x = divmod(rem, w)
        toff = int(m.node_off[tgt])
        wp = int(m.node_wptr[tgt])
        for o in range(co):
            for ky in range(kh):
                ny = y + py - ky
                if ny < 0 or ny % sy:
                    continue
                oy = ny // sy
                if oy >= ho:
                    continue
                for kx in range(kw):
                    nx = x + px - kx
                    if nx < 0 or nx % sx:
                        continue
                    ox = nx // sx
                    if ox >= wo:
                        continue
                    j = toff + (o * ho + oy) * wo + ox
                    self.acc[j] += m.weights[wp + ((o * ci + c) * kh + ky) * kw + kx] * d
                    self._mark(tgt, j)

    def _pool_spike(self, tgt: int, r: int, d: float) -> None:
        m = self.model
        _, _, kh, kw, h, w, ho, wo, sy, sx, py, px = (int(v) for v in m.node_conv[tgt])
        c, rem = divmod(r, h * w)
        y, x = divmod(rem, w)
        toff = int(m.node_off[tgt])
        wt = m.weights[int(m.node_wptr[tgt])]
        for ky in range(kh):
            ny = y + py - ky
            if ny < 0 or ny % sy:
                continue
            oy = ny // sy
            if oy >= ho:
                continue
            for kx in range(kw):
                nx = x + px - kx
                if nx < 0 or nx % sx:
                    continue
                ox = nx // sx
                if ox >= wo:
                    continue
                j = toff + (c * ho + oy) * wo + ox
                self.acc[j] += wt * d
                self._mark(tgt, j)

    def _value(self, node: int, j: int) -> float:
        m = self.model
        kind = m.node_kind[node]
        if kind in ACCUMULATING:
            return activate(int(m.node_act[node]), self.acc[j], m.node_lo[node], m.node_hi[node])
        if kind == K_PRODUCT:
            return self.xa[j] * self.xb[j]
        if kind == K_OUTPUT:
            return self.xa[j]
        return activate(int(m.node_act[node]), self.xa[j], m.node_lo[node], m.node_hi[node])

    def _send(self, node: int, j: int, v: float, t: int) -> None:
        m = self.model
        x = m.unit_scale[j] * v - self.sent[j]
        if not (x > 0.5 or x < -0.5):  # strictly beyond half a quantum: no toggling on ties
            return
        n = round_half_away(x)
        n, sat = saturate(n)
        self.n_saturated += sat
        self.sent[j] += n
        self._emit(node, j - int(m.node_off[node]), n, t)

    def _settle(self, t: int) -> None:
        m = self.model
        for node in range(m.n_nodes):
            if not self.node_dirty[node] or m.node_kind[node] == K_INTEGRATOR:
                continue
            self.node_dirty[node] = False
            off = int(m.node_off[node])
            if self.node_all_dirty[node]:
                self.node_all_dirty[node] = False
                units = range(off, off + int(m.node_size[node]))
                for j in self.dirty_lists[node]:
                    self.unit_dirty[j] = False
                self.dirty_lists[node].clear()
            else:
                units = list(self.dirty_lists[node])
                self.dirty_lists[node].clear()
                for j in units:
                    self.unit_dirty[j] = False
            for j in units:
                self._send(node, j, self._value(node, j), t)
        for node in range(m.n_nodes):
            if self.node_dirty[node] and m.node_kind[node] == K_INTEGRATOR:
                self.node_dirty[node] = False
                units = list(self.dirty_lists[node])
                self.dirty_lists[node].clear()
                for j in units:
                    self.unit_dirty[j] = False
                    self._reschedule(j, t)

    def _reschedule(self, u: int, t: int) -> None:
        m = self.model
        self.y[u] = integrator_state(
            self.y[u], self.xin_int[u], m.int_gain[u], m.int_inv_tau[u], (t - self.t_last[u]) * 1e-9
        )
        self.t_last[u] = t
        self.xin_int[u] = self.xa[u]
        self._schedule(u, t)

    def _schedule(self, u: int, t: int) -> None:
        m = self.model
        delay, direction = next_crossing(
            self.y[u],
            self.xin_int[u],
            m.int_gain[u],
            m.int_inv_tau[u],
            m.unit_scale[u],
            int(self.sent[u]),
            int(self.last_dir[u]),
        )
        self.version[u] += 1
        if delay == NO_CROSSING:
            self.sched[u] = NO_CROSSING
            return
        tc, self.deferred[u] = rate_limited(t + delay, int(self.t_fire[u]), m.int_min_gap_ns[u])
        self.sched[u] = tc
        self.direction[u] = direction
        heapq.heappush(self.heap, (tc, u, int(self.version[u])))

    def _fire_due(self, t_end: int) -> None:
        m = self.model
        while self.heap and self.heap[0][0] <= t_end:
            tc = self.heap[0][0]
            while self.heap and self.heap[0][0] == tc:
                _, u, ver = heapq.heappop(self.heap)
                if ver != self.version[u]:
                    continue
                node = int(self.node_of_unit[u])
                self.y[u] = integrator_state(
                    self.y[u],
                    self.xin_int[u],
                    m.int_gain[u],
                    m.int_inv_tau[u],
                    (tc - self.t_last[u]) * 1e-9,
                )
                self.t_last[u] = tc
                n = round_half_away(m.unit_scale[u] * self.y[u] - self.sent[u])
                if n == 0 or (n > 0) != (self.direction[u] > 0):
                    n = int(self.direction[u])
                n, sat = saturate(n)
                self.n_saturated += sat or bool(self.deferred[u])
                self.sent[u] += n
                self.last_dir[u] = 1 if n > 0 else -1
                self.t_fire[u] = tc
                self.n_crossings += 1
                self._emit(node, u - int(m.node_off[node]), n, tc)
                self._schedule(u, tc)
            self.now = tc
            self._settle(tc)

    # -- EngineBase hooks ----------------------------------------------------------------
    def _start(self, t_ns: int) -> None:
        m = self.model
        self.xin_int = np.zeros(m.n_units, np.float64)
        self.t_last[:] = t_ns
        for node in range(m.n_nodes):
            kind = m.node_kind[node]
            if kind == K_INPUT:
                continue
            if kind == K_INTEGRATOR:
                off = int(m.node_off[node])
                for j in range(off, off + int(m.node_size[node])):
                    x = m.unit_scale[j] * self.y[j]
                    n = round_half_away(x) if (x > 0.5 or x < -0.5) else 0
                    if n:
                        n, sat = saturate(n)
                        self.n_saturated += sat
                        self.sent[j] = n
                        self._emit(node, j - off, n, t_ns)
                    self._mark(node, j)
            elif kind == K_DENSE:
                self.node_all_dirty[node] = True
                self.node_dirty[node] = True
            else:
                off = int(m.node_off[node])
                for j in range(off, off + int(m.node_size[node])):
                    self._mark(node, j)
        self._settle(t_ns)

    def _push(self, t_ns: int, node: int, channels: np.ndarray, counts: np.ndarray) -> None:
        self._fire_due(t_ns)
        self.now = t_ns
        m = self.model
        off = int(m.node_off[node])
        for ch, c in zip(channels.tolist(), counts.tolist(), strict=True):
            self.spikes_in += abs(c)
            u = off + ch
            new, sat = saturate(int(self.sent[u]) + c)
            self.n_saturated += sat
            n = new - int(self.sent[u])
            if n == 0:
                continue
            self.sent[u] = new
            self._emit(node, ch, n, t_ns)
        self._settle(t_ns)

    def _advance(self, t_ns: int) -> None:
        self._fire_due(t_ns)

    def _take_outputs(self) -> list[tuple[int, int, int, float]]:
        out, self.out = self.out, []
        return out

    def _next_deadline(self) -> int | None:
        while self.heap and self.heap[0][2] != self.version[self.heap[0][1]]:
            heapq.heappop(self.heap)
        return self.heap[0][0] if self.heap else None

    def _sent(self) -> np.ndarray:
        return self.sent

    def _counter_arrays(self) -> tuple[np.ndarray, int, int, int]:
        return self.spikes, self.syn_ops, self.n_saturated, self.n_crossings, self.spikes_in

    def _integrator_y(self) -> np.ndarray:
        return self.y

    def _residuals(self) -> np.ndarray:
        m = self.model
        r = np.zeros(m.n_units, np.float64)
        for node in range(m.n_nodes):
            kind = m.node_kind[node]
            if kind == K_INPUT:
                continue
            off = int(m.node_off[node])
            for j in range(off, off + int(m.node_size[node])):
                if kind == K_INTEGRATOR:
                    v = integrator_state(
                        self.y[j],
                        self.xin_int[j],
                        m.int_gain[j],
                        m.int_inv_tau[j],
                        (self.now - self.t_last[j]) * 1e-9,
                    )
                else:
                    v = self._value(node, j)
                r[j] = m.unit_scale[j] * v - self.sent[j]
        return r
