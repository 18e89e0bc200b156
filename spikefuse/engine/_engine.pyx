# The compiled event loop. Private module: spikefuse.engine.Engine validates every
# argument in Python before calling in here. Directives are set once, in setup.py.
#
# Semantics are those of spikefuse.engine.reference (the test oracle), operation for
# operation, so both produce bit-identical outputs on the same inputs.

from libc.math cimport INFINITY, ceil, exp, fabs, floor, log, tanh
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()

# node kinds / edge kinds (same numbering as spikefuse.builder.model)
cdef enum:
    K_INPUT = 0
    K_DENSE = 1
    K_CONV = 2
    K_ACT = 3
    K_PRODUCT = 4
    K_INTEGRATOR = 5
    K_OUTPUT = 6
cdef enum:
    E_DENSE = 0
    E_CONV = 1
    E_ELEM = 2
    E_PROD_A = 3
    E_PROD_B = 4
cdef enum:
    I32_MAX = 2147483647
    I32_MIN = -2147483647


cdef f64 ROUND_LIMIT = 4611686018427387904.0  # 2^62: semantics.ROUND_LIMIT


cdef inline i64 round_half_away(f64 x) noexcept nogil:
    # |x| >= 2^62 (and +-inf) returns +-2^62 before the float -> int64 conversion, which
    # would overflow (a sign flip) near 2^63; every send then saturates at +-(2^31 - 1).
    # NaN maps to 0 (the engine never produces NaN from finite inputs)
    if x >= ROUND_LIMIT:
        return <i64>ROUND_LIMIT
    if x <= -ROUND_LIMIT:
        return -<i64>ROUND_LIMIT
    if x >= 0.0:
        return <i64>floor(x + 0.5)
    if x < 0.0:
        return -<i64>floor(-x + 0.5)
    return 0


cdef inline f64 activate(i32 code, f64 z, f64 lo, f64 hi) noexcept nogil:
    if code == 0:
        return z
    if code == 1:
        return z if z > 0.0 else 0.0
    if code == 2:
        return tanh(z)
    if code == 3:
        if z >= 0.0:
            return 1.0 / (1.0 + exp(-z))
        return exp(z) / (1.0 + exp(z))
    if code == 4:
        return fabs(z)
    if code == 5:
        if z < lo:
            return lo
        if z > hi:
            return hi
        return z
    return z


cdef inline f64 integrate(f64 y, f64 x, f64 g, f64 inv_tau, f64 dt_s) noexcept nogil:
    cdef f64 y_inf
    if inv_tau == 0.0:
        return y + g * x * dt_s
    y_inf = g * x / inv_tau
    return y_inf + (y - y_inf) * exp(-dt_s * inv_tau)


cdef class Core:
    """Flat-array event loop. Construct from a spikefuse.builder.Model."""

    def __cinit__(self):
        self.out = NULL
        self.n_out = 0
        self.cap_out = 0

    def __init__(self, model):
        m = model
        self.n_nodes = m.n_nodes
        self.n_units = m.n_units
        self.node_kind = np.ascontiguousarray(m.node_kind, np.int32)
        self.node_off = np.ascontiguousarray(m.node_off, np.int64)
        self.node_size = np.ascontiguousarray(m.node_size, np.int64)
        self.node_act = np.ascontiguousarray(m.node_act, np.int32)
        self.node_lo = np.ascontiguousarray(m.node_lo, np.float64)
        self.node_hi = np.ascontiguousarray(m.node_hi, np.float64)
        self.node_wptr = np.ascontiguousarray(m.node_wptr, np.int64)
        self.node_conv = np.ascontiguousarray(m.node_conv, np.int64)
        node_output = np.full(m.n_nodes, -1, np.int32)
        for i, n in enumerate(m.output_nodes):
            node_output[n] = i
        self.node_output = node_output
        self.edge_ptr = np.ascontiguousarray(m.edge_ptr, np.int64)
        self.edge_kind = np.ascontiguousarray(m.edge_kind, np.int32)
        self.edge_target = np.ascontiguousarray(m.edge_target, np.int32)
        self.edge_in_off = np.ascontiguousarray(m.edge_in_off, np.int64)
        self.weights = np.ascontiguousarray(m.weights, np.float64)
        self.scale = np.ascontiguousarray(m.unit_scale, np.float64)
        self.fanout = np.ascontiguousarray(m.unit_fanout, np.int64)
        self.gain = np.ascontiguousarray(m.int_gain, np.float64)
        self.inv_tau = np.ascontiguousarray(m.int_inv_tau, np.float64)
        self.node_of_unit = np.repeat(np.arange(m.n_nodes, dtype=np.int32), m.node_size)
        n = self.n_units
        self.now = 0
        self.sent = np.zeros(n, np.int64)
        self.acc = np.array(m.unit_bias, np.float64)
        self.xa = np.zeros(n, np.float64)
        self.xb = np.zeros(n, np.float64)
        self.xint = np.zeros(n, np.float64)
        self.y = np.array(m.int_y0, np.float64)
        self.t_last = np.zeros(n, np.int64)
        self.direction = np.zeros(n, np.int64)
        self.last_dir = np.zeros(n, np.int64)
        self.plo = np.full(n, np.inf)
        self.phi = np.full(n, -np.inf)
        self.node_dirty = np.zeros(m.n_nodes, np.uint8)
        self.node_all_dirty = np.zeros(m.n_nodes, np.uint8)
        self.unit_dirty = np.zeros(n, np.uint8)
        self.dirty_list = np.zeros(max(n, 1), np.int32)
        self.dirty_count = np.zeros(m.n_nodes, np.int64)
        self.heap_t = np.zeros(max(n, 1), np.int64)
        self.heap_u = np.zeros(max(n, 1), np.int32)
        self.heap_pos = np.full(max(n, 1), -1, np.int32)
        self.heap_n = 0
        self.spikes = np.zeros(m.n_nodes, np.int64)
        self.syn_ops = 0
        self.n_saturated = 0
        self.n_crossings = 0
        self.spikes_in = 0
        self.cap_out = 1024
        self.out = <OutEvent*>malloc(self.cap_out * sizeof(OutEvent))
        if self.out == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.out != NULL:
            free(self.out)
            self.out = NULL

    # ---------------------------------------------------------------- output buffer
    cdef int record(self, i64 t, i32 output, i32 channel, f64 value) except -1 nogil:
        cdef OutEvent* grown
        if self.n_out == self.cap_out:
            grown = <OutEvent*>realloc(self.out, 2 * self.cap_out * sizeof(OutEvent))
            if grown == NULL:
                with gil:
                    raise MemoryError("engine output buffer")
            self.out = grown
            self.cap_out *= 2
        self.out[self.n_out].t_ns = t
        self.out[self.n_out].output = output
        self.out[self.n_out].channel = channel
        self.out[self.n_out].value = value
        self.n_out += 1
        return 0

    # ---------------------------------------------------------------- propagation
    cdef int emit(self, i64 s, i64 i, i64 n, i64 t) except -1 nogil:
        cdef i64 u = self.node_off[s] + i
        cdef i64 an = n if n >= 0 else -n
        cdef i64 e, kind, tgt, r, toff, nt, w0, j
        cdef f64 k = self.scale[u]
        cdef f64 d, xv
        cdef f64* accp
        cdef f64* wp
        self.spikes[s] += an
        self.syn_ops += an * self.fanout[u]
        if self.node_kind[s] == K_OUTPUT:
            return self.record(t, self.node_output[s], <i32>i, <f64>self.sent[u] / k)
        for e in range(self.edge_ptr[s], self.edge_ptr[s + 1]):
            kind = self.edge_kind[e]
            tgt = self.edge_target[e]
            r = self.edge_in_off[e] + i
            toff = self.node_off[tgt]
            if kind == E_DENSE:
                nt = self.node_size[tgt]
                w0 = self.node_wptr[tgt] + r * nt
                d = <f64>n / k
                accp = &self.acc[toff]
                wp = &self.weights[w0]
                for j in range(nt):
                    accp[j] = accp[j] + wp[j] * d
                self.node_all_dirty[tgt] = 1
                self.node_dirty[tgt] = 1
            elif kind == E_CONV:
                self.conv_spike(tgt, r, <f64>n / k)
            else:
                j = toff + r
                xv = <f64>self.sent[u] / k
                if kind == E_PROD_B:
                    self.xb[j] = xv
                else:
                    self.xa[j] = xv
                self.mark(tgt, j)
        return 0

    cdef void mark(self, i64 node, i64 j) noexcept nogil:
        if not self.unit_dirty[j]:
            self.unit_dirty[j] = 1
            self.dirty_list[self.node_off[node] + self.dirty_count[node]] = <i32>j
            self.dirty_count[node] += 1
        self.node_dirty[node] = 1

    cdef void conv_spike(self, i64 tgt, i64 r, f64 d) noexcept nogil:
        cdef i64 co = self.node_conv[tgt, 0]
        cdef i64 ci = self.node_conv[tgt, 1]
        cdef i64 kh = self.node_conv[tgt, 2]
        cdef i64 kw = self.node_conv[tgt, 3]
        cdef i64 h = self.node_conv[tgt, 4]
        cdef i64 w = self.node_conv[tgt, 5]
        cdef i64 ho = self.node_conv[tgt, 6]
        cdef i64 wo = self.node_conv[tgt, 7]
        cdef i64 sy = self.node_conv[tgt, 8]
        cdef i64 sx = self.node_conv[tgt, 9]
        cdef i64 py = self.node_conv[tgt, 10]
        cdef i64 px = self.node_conv[tgt, 11]
        cdef i64 c = r // (h * w)
        cdef i64 rem = r - c * h * w
        cdef i64 yy = rem // w
        cdef i64 xx = rem - yy * w
        cdef i64 toff = self.node_off[tgt]
        cdef i64 wp = self.node_wptr[tgt]
        cdef i64 o, ky, kx, ny, nx, oy, ox, j
        for o in range(co):
            for ky in range(kh):
                ny = yy + py - ky
                if ny < 0 or ny % sy != 0:
                    continue
                oy = ny // sy
                if oy >= ho:
                    continue
                for kx in range(kw):
                    nx = xx + px - kx
                    if nx < 0 or nx % sx != 0:
                        continue
                    ox = nx // sx
                    if ox >= wo:
                        continue
                    j = toff + (o * ho + oy) * wo + ox
                    self.acc[j] = self.acc[j] + self.weights[wp + ((o * ci + c) * kh + ky) * kw + kx] * d
                    self.mark(tgt, j)

    cdef f64 value(self, i64 node, i64 j) noexcept nogil:
        cdef i32 kind = self.node_kind[node]
        if kind == K_DENSE or kind == K_CONV:
            return activate(self.node_act[node], self.acc[j], self.node_lo[node], self.node_hi[node])
        if kind == K_PRODUCT:
            return self.xa[j] * self.xb[j]
        if kind == K_OUTPUT:
            return self.xa[j]
        return activate(self.node_act[node], self.xa[j], self.node_lo[node], self.node_hi[node])

    cdef int send(self, i64 node, i64 j, f64 v, i64 t) except -1 nogil:
        # send only when the residual exceeds half a quantum (strictly), so a value sitting
        # exactly on a half level does not toggle +1/-1 on every recomputation
        cdef f64 x = self.scale[j] * v - <f64>self.sent[j]
        cdef i64 n
        if not (x > 0.5 or x < -0.5):
            return 0
        n = round_half_away(x)
        if n > I32_MAX:
            n = I32_MAX
            self.n_saturated += 1
        elif n < I32_MIN:
            n = I32_MIN
            self.n_saturated += 1
        self.sent[j] += n
        return self.emit(node, j - self.node_off[node], n, t)

    cdef void set_bounds(self, i64 node, i64 j) noexcept nogil:
        """Interval of the accumulator (pre-activation) inside which unit j of a dense/conv
        node cannot emit, shrunk inward by a margin far above rounding error. Only for the
        monotone piecewise-linear activations (identity, relu, clip); others get an empty
        interval, so the exact check always runs. A pure pre-filter: results do not change."""
        cdef i32 code = self.node_act[node]
        cdef f64 k = self.scale[j]
        cdef f64 s = <f64>self.sent[j]
        cdef f64 a = (s - 0.5) / k
        cdef f64 b = (s + 0.5) / k
        cdef f64 lo = a
        cdef f64 hi = b
        cdef f64 margin = 1e-9 * (1.0 + fabs(s)) / k
        self.plo[j] = INFINITY
        self.phi[j] = -INFINITY
        if code == 1:  # relu: f(z) = max(z, 0)
            if b < 0.0:
                return
            if a <= 0.0:
                lo = -INFINITY
        elif code == 5:  # clip
            if a > self.node_hi[node] or b < self.node_lo[node]:
                return
            if a <= self.node_lo[node]:
                lo = -INFINITY
            if b >= self.node_hi[node]:
                hi = INFINITY
        elif code != 0:
            return
        self.plo[j] = lo + margin
        self.phi[j] = hi - margin

    cdef int settle(self, i64 t) except -1 nogil:
        cdef i64 node, off, j, c, cnt
        cdef f64 v, x
        cdef f64* plo
        cdef f64* phi
        cdef f64* accp
        for node in range(self.n_nodes):
            if not self.node_dirty[node] or self.node_kind[node] == K_INTEGRATOR:
                continue
            self.node_dirty[node] = 0
            off = self.node_off[node]
            if self.node_all_dirty[node]:
                self.node_all_dirty[node] = 0
                for c in range(self.dirty_count[node]):
                    self.unit_dirty[self.dirty_list[off + c]] = 0
                self.dirty_count[node] = 0
                plo = &self.plo[off]
                phi = &self.phi[off]
                accp = &self.acc[off]
                for c in range(self.node_size[node]):
                    # pre-filter: inside (plo, phi) the unit provably does not cross a level
                    if plo[c] < accp[c] < phi[c]:
                        continue
                    j = off + c
                    v = self.value(node, j)
                    x = self.scale[j] * v - <f64>self.sent[j]
                    if -0.5 <= x <= 0.5:
                        continue
                    self.send(node, j, v, t)
                    self.set_bounds(node, j)
            else:
                cnt = self.dirty_count[node]
                self.dirty_count[node] = 0
                for c in range(cnt):
                    self.unit_dirty[self.dirty_list[off + c]] = 0
                for c in range(cnt):
                    j = self.dirty_list[off + c]
                    self.send(node, j, self.value(node, j), t)
        for node in range(self.n_nodes):
            if self.node_dirty[node] and self.node_kind[node] == K_INTEGRATOR:
                self.node_dirty[node] = 0
                off = self.node_off[node]
                cnt = self.dirty_count[node]
                self.dirty_count[node] = 0
                for c in range(cnt):
                    j = self.dirty_list[off + c]
                    self.unit_dirty[j] = 0
                    self.reschedule(j, t)
        return 0

    # ---------------------------------------------------------------- integrators
    cdef void reschedule(self, i64 u, i64 t) noexcept nogil:
        self.y[u] = integrate(self.y[u], self.xint[u], self.gain[u], self.inv_tau[u],
                              <f64>(t - self.t_last[u]) * 1e-9)
        self.t_last[u] = t
        self.xint[u] = self.xa[u]
        self.schedule(u, t)

    cdef void schedule(self, i64 u, i64 t) noexcept nogil:
        cdef f64 y = self.y[u]
        cdef f64 x = self.xint[u]
        cdef f64 g = self.gain[u]
        cdef f64 it = self.inv_tau[u]
        cdef f64 k = self.scale[u]
        cdef f64 slope = g * x - y * it
        cdef f64 level, dt, y_inf, num, den
        cdef i64 direction, delay
        if slope > 0.0:
            direction = 1
        elif slope < 0.0:
            direction = -1
        else:
            self.heap_remove(u)
            return
        # the next level is half a quantum away; right after a spike the other way it is a
        # whole quantum away (hysteresis on reversal, so feedback cannot make it chatter)
        if direction == -self.last_dir[u]:
            level = (<f64>self.sent[u] + <f64>direction) / k
        else:
            level = (<f64>self.sent[u] + 0.5 * <f64>direction) / k
        if it == 0.0:
            dt = (level - y) / (g * x)
        else:
            y_inf = g * x / it
            num = y - y_inf
            den = level - y_inf
            if den == 0.0 or (num > 0.0) != (den > 0.0) or fabs(den) >= fabs(num):
                self.heap_remove(u)
                return
            dt = log(num / den) / it
        if not (dt < 4.0e9):
            self.heap_remove(u)
            return
        if dt < 0.0:
            dt = 0.0
        delay = <i64>ceil(dt * 1e9)
        if delay <= 0:
            delay = 1
        self.direction[u] = direction
        self.heap_set(u, t + delay)

    cdef int fire_due(self, i64 t_end) except -1 nogil:
        cdef i64 tc, u, node, n
        while self.heap_n > 0 and self.heap_t[0] <= t_end:
            tc = self.heap_t[0]
            while self.heap_n > 0 and self.heap_t[0] == tc:
                u = self.heap_u[0]
                self.heap_remove(u)
                node = self.node_of_unit[u]
                self.y[u] = integrate(self.y[u], self.xint[u], self.gain[u], self.inv_tau[u],
                                      <f64>(tc - self.t_last[u]) * 1e-9)
                self.t_last[u] = tc
                n = round_half_away(self.scale[u] * self.y[u] - <f64>self.sent[u])
                if n == 0 or (n > 0) != (self.direction[u] > 0):
                    n = self.direction[u]
                if n > I32_MAX:
                    n = I32_MAX
                    self.n_saturated += 1
                elif n < I32_MIN:
                    n = I32_MIN
                    self.n_saturated += 1
                self.sent[u] += n
                self.last_dir[u] = 1 if n > 0 else -1
                self.n_crossings += 1
                self.emit(node, u - self.node_off[node], n, tc)
                self.schedule(u, tc)
            self.now = tc
            self.settle(tc)
        return 0

    # ---------------------------------------------------------------- indexed heap
    cdef bint heap_less(self, i64 a, i64 b) noexcept nogil:
        if self.heap_t[a] != self.heap_t[b]:
            return self.heap_t[a] < self.heap_t[b]
        return self.heap_u[a] < self.heap_u[b]

    cdef void heap_swap(self, i64 a, i64 b) noexcept nogil:
        cdef i64 ta = self.heap_t[a]
        cdef i32 ua = self.heap_u[a]
        self.heap_t[a] = self.heap_t[b]
        self.heap_u[a] = self.heap_u[b]
        self.heap_t[b] = ta
        self.heap_u[b] = ua
        self.heap_pos[self.heap_u[a]] = <i32>a
        self.heap_pos[self.heap_u[b]] = <i32>b

    cdef void sift_up(self, i64 i) noexcept nogil:
        cdef i64 p
        while i > 0:
            p = (i - 1) >> 1
            if self.heap_less(i, p):
                self.heap_swap(i, p)
                i = p
            else:
                break

    cdef void sift_down(self, i64 i) noexcept nogil:
        cdef i64 l, r, best
        while True:
            l = 2 * i + 1
            r = l + 1
            best = i
            if l < self.heap_n and self.heap_less(l, best):
                best = l
            if r < self.heap_n and self.heap_less(r, best):
                best = r
            if best == i:
                break
            self.heap_swap(i, best)
            i = best

    cdef void heap_set(self, i64 u, i64 t) noexcept nogil:
        cdef i64 i = self.heap_pos[u]
        if i < 0:
            i = self.heap_n
            self.heap_n += 1
            self.heap_t[i] = t
            self.heap_u[i] = <i32>u
            self.heap_pos[u] = <i32>i
            self.sift_up(i)
        else:
            self.heap_t[i] = t
            self.sift_up(i)
            self.sift_down(self.heap_pos[u])

    cdef void heap_remove(self, i64 u) noexcept nogil:
        cdef i64 i = self.heap_pos[u]
        cdef i64 last, moved
        if i < 0:
            return
        last = self.heap_n - 1
        if i != last:
            self.heap_swap(i, last)
        self.heap_n -= 1
        self.heap_pos[u] = -1
        if i != last:
            moved = self.heap_u[i]
            self.sift_up(i)
            self.sift_down(self.heap_pos[moved])

    # ---------------------------------------------------------------- Python entry points
    def start(self, i64 t):
        cdef i64 node, off, j, n
        cdef f64 x
        self.now = t
        for j in range(self.n_units):
            self.t_last[j] = t
        with nogil:
            for node in range(self.n_nodes):
                if self.node_kind[node] == K_INPUT:
                    continue
                off = self.node_off[node]
                if self.node_kind[node] == K_INTEGRATOR:
                    for j in range(off, off + self.node_size[node]):
                        x = self.scale[j] * self.y[j]
                        n = round_half_away(x) if (x > 0.5 or x < -0.5) else 0
                        if n != 0:
                            if n > I32_MAX:
                                n = I32_MAX
                                self.n_saturated += 1
                            elif n < I32_MIN:
                                n = I32_MIN
                                self.n_saturated += 1
                            self.sent[j] = n
                            self.emit(node, j - off, n, t)
                        self.mark(node, j)
                elif self.node_kind[node] == K_DENSE:
                    self.node_all_dirty[node] = 1
                    self.node_dirty[node] = 1
                else:
                    for j in range(off, off + self.node_size[node]):
                        self.mark(node, j)
            self.settle(t)
            for node in range(self.n_nodes):
                if self.node_kind[node] == K_DENSE or self.node_kind[node] == K_CONV:
                    for j in range(self.node_off[node], self.node_off[node] + self.node_size[node]):
                        self.set_bounds(node, j)

    cdef int push_one(self, i64 t, i64 node, const i32[::1] channels, const i32[::1] counts,
                      i64 lo, i64 hi) except -1 nogil:
        cdef i64 off = self.node_off[node]
        cdef i64 idx, u, c, new, n
        self.fire_due(t)
        self.now = t
        for idx in range(lo, hi):
            u = off + channels[idx]
            c = counts[idx]
            self.spikes_in += c if c >= 0 else -c
            new = self.sent[u] + c
            if new > I32_MAX:
                new = I32_MAX
                self.n_saturated += 1
            elif new < I32_MIN:
                new = I32_MIN
                self.n_saturated += 1
            n = new - self.sent[u]
            if n == 0:
                continue
            self.sent[u] = new
            self.emit(node, channels[idx], n, t)
        self.settle(t)
        return 0

    def push(self, i64 t, i64 node, const i32[::1] channels, const i32[::1] counts):
        """Arguments are validated by the Python wrapper (spikefuse.engine.Engine)."""
        with nogil:
            self.push_one(t, node, channels, counts, 0, channels.shape[0])

    def push_many(self, const i64[::1] t, const i32[::1] node, const i64[::1] ptr,
                  const i32[::1] channels, const i32[::1] counts):
        """Batch b is channels[ptr[b]:ptr[b+1]] into input node[b] at time t[b] (validated,
        time-ordered by the Python wrapper)."""
        cdef i64 b
        with nogil:
            for b in range(t.shape[0]):
                self.push_one(t[b], node[b], channels, counts, ptr[b], ptr[b + 1])

    def advance(self, i64 t):
        with nogil:
            self.fire_due(t)

    def take_outputs(self, dtype):
        arr = np.empty(self.n_out, dtype=dtype)
        cdef cnp.uint8_t[::1] raw
        if self.n_out:
            raw = arr.view(np.uint8)
            memcpy(&raw[0], self.out, self.n_out * sizeof(OutEvent))
        self.n_out = 0
        return arr

    def next_deadline(self):
        if self.heap_n == 0:
            return None
        return int(self.heap_t[0])

    def residuals(self):
        """k*v - sent for every unit (integrators: y advanced to ``now``; inputs: 0)."""
        out = np.zeros(self.n_units, np.float64)
        cdef f64[::1] r = out
        cdef i64 node, j
        cdef f64 v
        for node in range(self.n_nodes):
            if self.node_kind[node] == K_INPUT:
                continue
            for j in range(self.node_off[node], self.node_off[node] + self.node_size[node]):
                if self.node_kind[node] == K_INTEGRATOR:
                    v = integrate(self.y[j], self.xint[j], self.gain[j], self.inv_tau[j],
                                  <f64>(self.now - self.t_last[j]) * 1e-9)
                else:
                    v = self.value(node, j)
                r[j] = self.scale[j] * v - <f64>self.sent[j]
        return out

    def sent_array(self):
        return np.asarray(self.sent)

    def spikes_array(self):
        return np.asarray(self.spikes)

    def y_array(self):
        return np.asarray(self.y)
