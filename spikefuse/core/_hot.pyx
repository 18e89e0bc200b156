# The fusion core's compiled per-message path. Private module: spikefuse.core.hot.HotPath
# checks what it is given before building a _Hot. Directives are set once, in setup.py.
#
# Contract. _Hot.on_payload either handles an EventBatch payload completely, with exactly
# the semantics of the Python path (FusionCore.handle followed by FusionCore.service at the
# same time; a status due then is left to the caller's next service), or returns None
# having changed nothing, and the Python path handles the message. Every check runs before the first change. The state is the Python objects' own:
# the InputState arrays (received, _sent), the MotorChannel arrays (target, commanded),
# the engine's compiled Core and the core's motor sequence numbers are written through
# views held here; scalar state is read and written as the objects' attributes. Every
# bound comes from the module that owns it (spikefuse.protocol, the config, the graph) and
# is passed in at construction: no limit is a literal here.
#
# nogil functions (the msgpack reader, the checks over the events, the per-event updates,
# the engine push, output routing and the MotorCommand encoder) touch no Python object and
# only memory owned by this object, the InputState/MotorChannel arrays it holds references
# to (updated in place by the Python side too, never reallocated) and the engine's Core.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport isfinite
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

import numpy as np

from spikefuse.protocol import EventBatch, MotorCommand

I4 = np.dtype("<i4")  # the wire's int32 (as spikefuse.protocol decodes it)
F8 = np.dtype("<f8")  # the wire's float64 (MotorCommand.values)

from spikefuse.engine._engine cimport Core, OutEvent, f64, i32, i64, u8


cdef struct Limits:
    i64 max_abs_time_ns
    i64 max_dt_ns
    i64 max_skew_ns
    Py_ssize_t max_payload
    i64 version
    i64 kind_batch
    i64 kind_motor
    u8 batch_head  # msgpack fixarray of version, kind and the EventBatch fields
    u8 motor_head  # the same for MotorCommand


cdef struct Parsed:
    const u8* sensor
    Py_ssize_t sensor_len
    const u8* inp
    Py_ssize_t inp_len
    i64 seq
    i64 t_ns
    i64 epoch_ns
    f64 scale
    const u8* ch
    const u8* co
    const u8* dt
    Py_ssize_t n


# ------------------------------------------------------------------ msgpack reading (nogil)
cdef inline uint64_t be(const u8* p, int k) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(k):
        v = (v << 8) | p[i]
    return v


cdef int read_int(const u8* b, Py_ssize_t n, Py_ssize_t* pos, i64* out) noexcept nogil:
    """A msgpack integer in the int64 range; -1 if the next item is anything else."""
    cdef Py_ssize_t p = pos[0]
    cdef u8 c
    cdef uint64_t u
    cdef int k
    if p >= n:
        return -1
    c = b[p]
    if c <= 0x7F:
        out[0] = c
        pos[0] = p + 1
        return 0
    if c >= 0xE0:
        out[0] = <i64>c - 256
        pos[0] = p + 1
        return 0
    if 0xCC <= c <= 0xCF:
        k = 1 << (c - 0xCC)
        if p + 1 + k > n:
            return -1
        u = be(b + p + 1, k)
        if u > <uint64_t>0x7FFFFFFFFFFFFFFF:
            return -1
        out[0] = <i64>u
        pos[0] = p + 1 + k
        return 0
    if 0xD0 <= c <= 0xD3:
        k = 1 << (c - 0xD0)
        if p + 1 + k > n:
            return -1
        u = be(b + p + 1, k)
        if k == 1:
            out[0] = <i64>(<signed char>u)
        elif k == 2:
            out[0] = <i64>(<short>u)
        elif k == 4:
            out[0] = <i64>(<int>u)
        else:
            out[0] = <i64>u
        pos[0] = p + 1 + k
        return 0
    return -1


cdef int read_len(const u8* b, Py_ssize_t n, Py_ssize_t* pos, u8 c8, Py_ssize_t* ln) noexcept nogil:
    """Length of a str/bin whose 8/16/32-bit forms start at marker ``c8``; -1 otherwise."""
    cdef Py_ssize_t p = pos[0]
    cdef int k
    cdef u8 c = b[p]
    if c < c8 or c > c8 + 2:
        return -1
    k = 1 << (c - c8)
    if p + 1 + k > n:
        return -1
    ln[0] = <Py_ssize_t>be(b + p + 1, k)
    pos[0] = p + 1 + k
    return 0


cdef int read_str(const u8* b, Py_ssize_t n, Py_ssize_t* pos, const u8** s, Py_ssize_t* ln) noexcept nogil:
    cdef Py_ssize_t p = pos[0]
    if p >= n:
        return -1
    if 0xA0 <= b[p] <= 0xBF:
        ln[0] = b[p] & 0x1F
        pos[0] = p + 1
    elif read_len(b, n, pos, 0xD9, ln) != 0:
        return -1
    if pos[0] + ln[0] > n:
        return -1
    s[0] = b + pos[0]
    pos[0] += ln[0]
    return 0


cdef int read_bin(const u8* b, Py_ssize_t n, Py_ssize_t* pos, const u8** s, Py_ssize_t* ln) noexcept nogil:
    if pos[0] >= n or read_len(b, n, pos, 0xC4, ln) != 0:
        return -1
    if pos[0] + ln[0] > n:
        return -1
    s[0] = b + pos[0]
    pos[0] += ln[0]
    return 0


cdef int parse_batch(const u8* b, Py_ssize_t n, const Limits* lim, Parsed* m) noexcept nogil:
    """The framing of an EventBatch payload (``[version, kind, sensor, seq, t_ns,
    epoch_offset_ns, input, scale, channels, counts, dt_ns]``) and the decoder's bounds on
    its fields (spikefuse.protocol); -1 for anything else (the Python decoder decides)."""
    cdef Py_ssize_t pos = 1
    cdef i64 v
    cdef uint64_t bits
    cdef Py_ssize_t ln
    if n < 1 or n > lim.max_payload or b[0] != lim.batch_head:
        return -1
    if read_int(b, n, &pos, &v) != 0 or v != lim.version:
        return -1
    if read_int(b, n, &pos, &v) != 0 or v != lim.kind_batch:
        return -1
    if read_str(b, n, &pos, &m.sensor, &m.sensor_len) != 0:
        return -1
    if read_int(b, n, &pos, &m.seq) != 0 or m.seq < 0:
        return -1
    if read_int(b, n, &pos, &m.t_ns) != 0 or not (-lim.max_abs_time_ns <= m.t_ns <= lim.max_abs_time_ns):
        return -1
    if read_int(b, n, &pos, &m.epoch_ns) != 0 or not (
        -lim.max_abs_time_ns <= m.epoch_ns <= lim.max_abs_time_ns
    ):
        return -1
    if read_str(b, n, &pos, &m.inp, &m.inp_len) != 0:
        return -1
    if pos + 9 > n or b[pos] != 0xCB:  # float64
        return -1
    bits = be(b + pos + 1, 8)
    memcpy(&m.scale, &bits, 8)
    pos += 9
    if not (isfinite(m.scale) and m.scale > 0.0):
        return -1
    if read_bin(b, n, &pos, &m.ch, &ln) != 0 or ln % 4:
        return -1
    m.n = ln // 4
    if read_bin(b, n, &pos, &m.co, &ln) != 0 or ln != m.n * 4:
        return -1
    if pos >= n:
        return -1
    if b[pos] == 0xC0:
        m.dt = NULL
        pos += 1
    elif read_bin(b, n, &pos, &m.dt, &ln) != 0 or ln != m.n * 8:
        return -1
    return 0 if pos == n else -1


# ------------------------------------------------------------------ msgpack writing (nogil)
cdef inline Py_ssize_t put_be(u8* o, uint64_t v, int k) noexcept nogil:
    cdef int i
    for i in range(k):
        o[k - 1 - i] = <u8>(v >> (8 * i))
    return k


cdef Py_ssize_t write_int(u8* o, i64 v) noexcept nogil:
    """msgpack's smallest form of ``v`` (as msgpack.Packer writes it)."""
    if 0 <= v <= 0x7F:
        o[0] = <u8>v
        return 1
    if -32 <= v < 0:
        o[0] = <u8>(v + 256)
        return 1
    if v > 0:
        if v <= 0xFF:
            o[0] = 0xCC
            return 1 + put_be(o + 1, <uint64_t>v, 1)
        if v <= 0xFFFF:
            o[0] = 0xCD
            return 1 + put_be(o + 1, <uint64_t>v, 2)
        if v <= <i64>4294967295:
            o[0] = 0xCE
            return 1 + put_be(o + 1, <uint64_t>v, 4)
        o[0] = 0xCF
        return 1 + put_be(o + 1, <uint64_t>v, 8)
    if v >= -128:
        o[0] = 0xD0
        return 1 + put_be(o + 1, <uint64_t>v, 1)
    if v >= -32768:
        o[0] = 0xD1
        return 1 + put_be(o + 1, <uint64_t>v, 2)
    if v >= -<i64>2147483648:
        o[0] = 0xD2
        return 1 + put_be(o + 1, <uint64_t>v, 4)
    o[0] = 0xD3
    return 1 + put_be(o + 1, <uint64_t>v, 8)


cdef Py_ssize_t write_head(u8* o, u8 c8, Py_ssize_t ln) noexcept nogil:
    """The 8/16/32-bit length header of a str (``c8`` = 0xD9) or bin (0xC4)."""
    if ln <= 0xFF:
        o[0] = c8
        return 1 + put_be(o + 1, <uint64_t>ln, 1)
    if ln <= 0xFFFF:
        o[0] = c8 + 1
        return 1 + put_be(o + 1, <uint64_t>ln, 2)
    o[0] = c8 + 2
    return 1 + put_be(o + 1, <uint64_t>ln, 4)


cdef Py_ssize_t write_str(u8* o, const u8* s, Py_ssize_t ln) noexcept nogil:
    cdef Py_ssize_t k
    if ln < 32:
        o[0] = 0xA0 | <u8>ln
        k = 1
    else:
        k = write_head(o, 0xD9, ln)
    memcpy(o + k, s, ln)
    return k + ln


# ------------------------------------------------------------------ the per-message path
cdef struct Motor:
    i64 n  # channels
    i64* index  # into the Output node
    f64* target
    f64* commanded
    bint clamp
    f64 lo
    f64 hi
    i64 refresh_ns
    i64 min_interval_ns
    const u8* name
    Py_ssize_t name_len


cdef class _Hot:
    cdef Core core
    cdef object fusion, engine, input_set
    cdef Limits lim
    # streams (one per input): names as UTF-8, the input's state and arrays
    cdef list keep  # every Python object whose memory a pointer below points into
    cdef list states
    cdef Py_ssize_t n_in
    cdef const u8** sensor
    cdef Py_ssize_t* sensor_len
    cdef const u8** inp
    cdef Py_ssize_t* inp_len
    cdef list topics
    cdef list names  # (sensor, input) as str: the held parts' fields
    cdef i64* node
    cdef i64* size
    cdef f64* scale
    cdef i64* timeout_ns
    cdef i64** received
    cdef i64** sent
    # outputs routed to motors: (output index, unit offset, size, motors)
    cdef Py_ssize_t n_routes
    cdef bint single
    cdef i32* route_output
    cdef i64* route_off
    cdef i64* route_size
    cdef list route_motors  # list of lists of motor indices
    # motors
    cdef list motors
    cdef Py_ssize_t n_mot
    cdef Motor* mot
    cdef i64* motor_seq
    # scratch
    cdef i32[::1] ch_buf
    cdef i32[::1] co_buf
    cdef i64[::1] dt_buf
    cdef f64[::1] value_buf
    cdef f64[::1] new_buf
    cdef u8[::1] out_buf

    def __cinit__(self):
        self.sensor = NULL
        self.sensor_len = NULL
        self.inp = NULL
        self.inp_len = NULL
        self.node = NULL
        self.size = NULL
        self.scale = NULL
        self.timeout_ns = NULL
        self.received = NULL
        self.sent = NULL
        self.route_output = NULL
        self.route_off = NULL
        self.route_size = NULL
        self.mot = NULL

    def __dealloc__(self):
        free(self.sensor)
        free(self.sensor_len)
        free(self.inp)
        free(self.inp_len)
        free(self.node)
        free(self.size)
        free(self.scale)
        free(self.timeout_ns)
        free(self.received)
        free(self.sent)
        free(self.route_output)
        free(self.route_off)
        free(self.route_size)
        free(self.mot)

    def __init__(self, fusion, dict limits, list streams, list routes, list motors,
                 motor_seq):
        """Built by spikefuse.core.hot.HotPath, which checked every argument.

        ``streams``: per input (InputState, sensor bytes, input bytes, topic bytes, engine
        input node); ``routes``: (output index, unit offset, size, [motor indices]);
        ``motors``: (MotorChannel, name bytes, index int64 array, clamp or None,
        refresh_ns, min_interval_ns); ``motor_seq``: the core's int64 sequence numbers."""
        cdef Py_ssize_t k, i
        cdef i64[::1] arr
        cdef f64[::1] farr
        cdef i64[::1] seq_view = motor_seq
        self.fusion = fusion
        self.engine = fusion.engine
        self.input_set = fusion.input_set
        self.core = <Core?>fusion.engine._core
        self.lim.max_abs_time_ns = limits["max_abs_time_ns"]
        self.lim.max_dt_ns = limits["max_dt_ns"]
        self.lim.max_skew_ns = limits["max_skew_ns"]
        self.lim.max_payload = limits["max_payload_bytes"]
        self.lim.version = limits["version"]
        self.lim.kind_batch = limits["kind_batch"]
        self.lim.kind_motor = limits["kind_motor"]
        self.lim.batch_head = 0x90 | (2 + limits["batch_fields"])
        self.lim.motor_head = 0x90 | (2 + limits["motor_fields"])
        self.keep = [motor_seq]
        self.motor_seq = &seq_view[0]
        # inputs
        self.n_in = len(streams)
        self.states = [s[0] for s in streams]
        self.topics = [s[3] for s in streams]
        self.names = [(s[0].cfg.sensor, s[0].cfg.input or s[0].name) for s in streams]
        self.sensor = <const u8**>malloc(self.n_in * sizeof(u8*))
        self.sensor_len = <Py_ssize_t*>malloc(self.n_in * sizeof(Py_ssize_t))
        self.inp = <const u8**>malloc(self.n_in * sizeof(u8*))
        self.inp_len = <Py_ssize_t*>malloc(self.n_in * sizeof(Py_ssize_t))
        self.node = <i64*>malloc(self.n_in * sizeof(i64))
        self.size = <i64*>malloc(self.n_in * sizeof(i64))
        self.scale = <f64*>malloc(self.n_in * sizeof(f64))
        self.timeout_ns = <i64*>malloc(self.n_in * sizeof(i64))
        self.received = <i64**>malloc(self.n_in * sizeof(i64*))
        self.sent = <i64**>malloc(self.n_in * sizeof(i64*))
        for k, (st, sensor, inp, topic, node) in enumerate(streams):
            self.keep += [sensor, inp, st.received, st._sent]
            self.sensor[k] = <const u8*>PyBytes_AS_STRING(sensor)
            self.sensor_len[k] = PyBytes_GET_SIZE(sensor)
            self.inp[k] = <const u8*>PyBytes_AS_STRING(inp)
            self.inp_len[k] = PyBytes_GET_SIZE(inp)
            self.node[k] = node
            self.size[k] = st.size
            self.scale[k] = st.scale
            self.timeout_ns[k] = st.timeout_ns
            arr = st.received
            self.received[k] = &arr[0]
            arr = st._sent
            self.sent[k] = &arr[0]
        # routes
        self.n_routes = len(routes)
        self.single = self.n_routes == 1 and len(self.engine.output_names) == 1
        self.route_output = <i32*>malloc(max(1, self.n_routes) * sizeof(i32))
        self.route_off = <i64*>malloc(max(1, self.n_routes) * sizeof(i64))
        self.route_size = <i64*>malloc(max(1, self.n_routes) * sizeof(i64))
        self.route_motors = []
        max_size = 1
        for i, (idx, off, size, mine) in enumerate(routes):
            self.route_output[i] = idx
            self.route_off[i] = off
            self.route_size[i] = size
            self.route_motors.append(list(mine))
            max_size = max(max_size, size)
        # motors
        self.motors = [m[0] for m in motors]
        self.n_mot = len(motors)
        self.mot = <Motor*>malloc(max(1, self.n_mot) * sizeof(Motor))
        cap = 0
        for i, (mc, name, index, clamp, refresh_ns, min_interval_ns) in enumerate(motors):
            self.keep += [name, index, mc.target, mc.commanded]
            self.mot[i].n = index.size
            arr = index
            self.mot[i].index = &arr[0] if index.size else NULL
            farr = mc.target
            self.mot[i].target = &farr[0] if index.size else NULL
            farr = mc.commanded
            self.mot[i].commanded = &farr[0] if index.size else NULL
            self.mot[i].clamp = clamp is not None
            self.mot[i].lo = clamp[0] if clamp is not None else 0.0
            self.mot[i].hi = clamp[1] if clamp is not None else 0.0
            self.mot[i].refresh_ns = refresh_ns
            self.mot[i].min_interval_ns = min_interval_ns
            self.mot[i].name = <const u8*>PyBytes_AS_STRING(name)
            self.mot[i].name_len = PyBytes_GET_SIZE(name)
            max_size = max(max_size, index.size)
            # array, version, kind, name (<= 5 + len), seq, t, cause (<= 9 each), bin
            cap += 1 + 9 + 9 + 5 + len(name) + 27 + 5 + 8 * index.size
        self.value_buf = np.zeros(max_size, np.float64)
        self.new_buf = np.zeros(max_size, np.float64)
        self.out_buf = np.zeros(max(1, cap), np.uint8)
        self.ch_buf = np.zeros(64, np.int32)
        self.co_buf = np.zeros(64, np.int32)
        self.dt_buf = np.zeros(64, np.int64)

    # -------------------------------------------------------------- helpers (nogil)
    cdef Py_ssize_t find_stream(self, const Parsed* m) noexcept nogil:
        cdef Py_ssize_t k
        for k in range(self.n_in):
            if (
                self.sensor_len[k] == m.sensor_len
                and self.inp_len[k] == m.inp_len
                and memcmp(self.sensor[k], m.sensor, m.sensor_len) == 0
                and memcmp(self.inp[k], m.inp, m.inp_len) == 0
            ):
                return k
        return -1

    cdef int load_events(self, const Parsed* m, i64 size, i64* t_end) noexcept nogil:
        """Copy channels/counts/offsets into the scratch buffers; -1 if a channel is outside
        [0, size), an offset outside [0, max_dt_ns] or the offsets are not in time order
        (the Python path sorts them). ``t_end``: t_ns + max(dt_ns)."""
        cdef Py_ssize_t i
        cdef i32 c
        cdef i64 d = 0, dmax = 0
        for i in range(m.n):
            memcpy(&c, m.ch + 4 * i, 4)
            if c < 0 or c >= size:
                return -1
            self.ch_buf[i] = c
            memcpy(&c, m.co + 4 * i, 4)
            self.co_buf[i] = c
            if m.dt != NULL:
                memcpy(&d, m.dt + 8 * i, 8)
                if d < 0 or d > self.lim.max_dt_ns or d < dmax:
                    return -1
                dmax = d
            self.dt_buf[i] = d
        t_end[0] = m.t_ns + dmax
        return 0

    cdef void add_counts(self, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i
        cdef i64* rec = self.received[k]
        cdef i64* snt = self.sent[k]
        for i in range(n):
            rec[self.ch_buf[i]] += self.co_buf[i]
            snt[self.ch_buf[i]] += self.co_buf[i]

    cdef i64 last_event(self, i32 output) noexcept nogil:
        """Index of the last output event of ``output`` in the engine's buffer, -1 if none."""
        cdef i64 j = self.core.n_out - 1
        while j >= 0:
            if self.core.out[j].output == output:
                return j
            j -= 1
        return -1

    cdef void output_value(self, Py_ssize_t r) noexcept nogil:
        cdef i64 j, off = self.route_off[r]
        for j in range(self.route_size[r]):
            self.value_buf[j] = self.core.sent[off + j] / self.core.scale[off + j]

    cdef Py_ssize_t encode(self, Py_ssize_t i, Py_ssize_t pos, i64 seq, i64 t_ns, i64 cause) noexcept nogil:
        """MotorCommand ``[version, kind, actuator, seq, t_ns, cause_t_ns, values]`` of
        motor ``i`` at ``out_buf[pos:]`` (msgpack.Packer's bytes); returns its length."""
        cdef u8* o = &self.out_buf[pos]
        cdef Py_ssize_t k = 1
        cdef Motor* m = &self.mot[i]
        o[0] = self.lim.motor_head
        k += write_int(o + k, self.lim.version)
        k += write_int(o + k, self.lim.kind_motor)
        k += write_str(o + k, m.name, m.name_len)
        k += write_int(o + k, seq)
        k += write_int(o + k, t_ns)
        k += write_int(o + k, cause)
        k += write_head(o + k, 0xC4, 8 * m.n)
        if m.n:
            memcpy(o + k, m.commanded, 8 * m.n)
        return k + 8 * m.n

    # -------------------------------------------------------------- Python-level steps
    cdef bint staleness_unchanged(self, Py_ssize_t k, i64 now_ns) except -1:
        """No input's state (live, stale, ended: ``FusionCore._check_stale``) changes at
        ``now_ns`` once input ``k`` is seen now (-1: none is)."""
        cdef Py_ssize_t j
        for j in range(self.n_in):
            st = self.states[j]
            if j == k:
                if st.stale or st.ended or st.end_announced:
                    return False
            elif st.end_announced:  # ended: time changes nothing
                if st.stale or not st.ended:
                    return False
            elif st.ended or bool(st.stale) != (
                now_ns - <i64>st.last_seen_ns > self.timeout_ns[j]
            ):
                return False
        return True

    cdef int fire_due(self, i64 now_ns, i64 engine_now) except -1:
        """The crossings due by ``now_ns`` (the engine's clock at ``engine_now``, no reorder
        window), fired and routed, as ``FusionCore.service`` does before its motors."""
        if self.core.heap_n > 0 and self.core.heap_t[0] <= now_ns and now_ns >= engine_now:
            with nogil:
                self.core.fire_due(now_ns)
            self.engine.now = now_ns
            self.engine.events_out += self.core.n_out
            self.route(now_ns, now_ns, False, 0)
            self.core.n_out = 0
        return 0

    cdef int route(self, i64 now_ns, i64 cause_t, bint has_push, i64 push_t) except -1:
        """FusionCore._route_outputs over the engine's buffered output events."""
        cdef Py_ssize_t r, j
        cdef i64 last_t, t
        if self.core.n_out == 0 or self.n_routes == 0:
            return 0
        for r in range(self.n_routes):
            if self.single:
                last_t = self.core.out[self.core.n_out - 1].t_ns
            else:
                j = self.last_event(self.route_output[r])
                if j < 0:
                    continue
                last_t = self.core.out[j].t_ns
            t = cause_t if has_push and last_t == push_t else last_t
            self.output_value(r)
            for i in self.route_motors[r]:
                self.set_output(i, t, now_ns)
        return 0

    cdef int set_output(self, Py_ssize_t i, i64 cause_t, i64 now_ns) except -1:
        """MotorChannel.set_output with the Output node's values in ``value_buf``."""
        cdef Motor* m = &self.mot[i]
        cdef Py_ssize_t j
        cdef f64 raw, v
        cdef bint clamped = False, same = True, rest = True
        mc = self.motors[i]
        if mc.fallback:
            return 0
        with nogil:
            for j in range(m.n):
                raw = self.value_buf[m.index[j]]
                v = raw
                if m.clamp:
                    if v < m.lo:
                        v = m.lo
                    if v > m.hi:
                        v = m.hi
                    if v != raw:
                        clamped = True
                self.new_buf[j] = v
                if v != m.target[j]:
                    same = False
        if clamped:
            mc.n_clamped += 1
        if same:
            return 0
        if mc._at_rest:
            mc.slew_t_ns = now_ns
        if mc.dirty:
            mc.n_coalesced += 1
        with nogil:
            for j in range(m.n):
                m.target[j] = self.new_buf[j]
                if self.new_buf[j] != m.commanded[j]:
                    rest = False
        mc._at_rest = rest
        mc.cause_t_ns = cause_t
        mc.dirty = True
        mc.fresh = True
        return 0

    cdef list poll_motors(self, i64 now_ns, i64 stamp_ns):
        """The motor part of FusionCore.service: every motor due publishes (encoded here;
        the caller sends and counts). Without a slew limit (static condition) a motor's
        due time and its values do not depend on its fallback state."""
        cdef Py_ssize_t i, pos = 0, ln
        cdef Motor* m
        cdef i64 due, last, seq, cause
        cdef list out = []
        for i in range(self.n_mot):
            mc = self.motors[i]
            m = &self.mot[i]
            last = mc.last_pub_ns
            due = last + m.refresh_ns
            if mc.dirty and last + m.min_interval_ns < due:
                due = last + m.min_interval_ns
            if now_ns < due:
                continue
            if m.n:
                memcpy(m.commanded, m.target, 8 * m.n)
            mc._at_rest = True
            mc.dirty = False
            mc.last_pub_ns = now_ns
            mc.n_published += 1
            seq = self.motor_seq[i]
            self.motor_seq[i] = seq + 1
            cause = mc.cause_t_ns
            ln = self.encode(i, pos, seq, stamp_ns, cause)
            fresh = mc.fresh
            mc.fresh = False
            data = PyBytes_FromStringAndSize(<char*>&self.out_buf[pos], ln)
            out.append((i, data, stamp_ns, cause, fresh))
            pos += ln
        return out

    def refresh(self, i64 now_ns, i64 stamp_ns):
        """The motor part of FusionCore.service on a wake without a message (the refresh
        wake of an idle core): the commands of every motor due, encoded, as
        :meth:`on_payload` returns them."""
        return self.poll_motors(now_ns, stamp_ns)

    cdef int push_parts(self, const Parsed* m, Py_ssize_t k, i64 now_ns) except -1:
        """FusionCore._apply for each part of the loaded batch (its events of one time, in
        time order): pushed at its time (``now_ns`` if earlier), outputs routed with the
        part's time as the cause."""
        cdef Py_ssize_t lo = 0, hi
        cdef i64 t_part, push_t
        eng = self.engine
        while lo < m.n:
            hi = lo + 1
            while hi < m.n and self.dt_buf[hi] == self.dt_buf[lo]:
                hi += 1
            t_part = m.t_ns + self.dt_buf[lo]
            push_t = t_part if t_part < now_ns else now_ns
            with nogil:
                self.core.push_one(push_t, self.node[k], self.ch_buf, self.co_buf, lo, hi)
            eng.now = push_t
            eng.events_out += self.core.n_out
            self.route(now_ns, t_part, True, push_t)
            self.core.n_out = 0
            lo = hi
        return 0

    cdef Py_ssize_t load_next(self, bytes topic, bytes payload, i64 now_ns, Parsed* m) except -2:
        """The checks both entry points share: ``payload`` parsed into ``m`` as the next
        batch (in seq order, same scale) of one of the core's streams, on ``topic``, its
        events loaded into the buffers and its times within the skew of ``now_ns``.
        Returns the stream index, or -1 for anything the Python path must handle."""
        cdef Py_ssize_t k
        cdef i64 t_end
        cdef i64 skew = self.lim.max_skew_ns
        cdef const u8* b = <const u8*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef int ok
        with nogil:
            ok = parse_batch(b, n, &self.lim, m)
            k = self.find_stream(m) if ok == 0 else -1
        if k < 0 or topic != self.topics[k]:
            return -1
        st = self.states[k]
        last_seq = st.last_seq
        if last_seq is None or m.seq - 1 != last_seq or st.last_scale != m.scale:
            return -1
        if m.n > self.ch_buf.shape[0]:
            self.ch_buf = np.zeros(2 * m.n, np.int32)
            self.co_buf = np.zeros(2 * m.n, np.int32)
            self.dt_buf = np.zeros(2 * m.n, np.int64)
        with nogil:
            ok = self.load_events(m, self.size[k], &t_end)
        if ok != 0:
            return -1
        if not (-skew <= m.t_ns - now_ns <= skew and -skew <= t_end - now_ns <= skew):
            return -1
        return k

    # -------------------------------------------------------------- the entry point
    def on_payload(self, bytes topic, bytes payload, i64 now_ns, i64 stamp_ns):
        """Handle one EventBatch payload completely; None (nothing changed) for anything
        the Python path must handle. Returns the MotorCommands published, as
        ``(motor index, payload, t_ns, cause_t_ns, fresh)``."""
        cdef Parsed m
        cdef Py_ssize_t k
        cdef i64 t_part, push_t, engine_now
        k = self.load_next(topic, payload, now_ns, &m)
        if k < 0 or m.scale != self.scale[k]:
            return None
        st = self.states[k]
        t_part = m.t_ns + (self.dt_buf[0] if m.n else 0)  # the first part's time
        push_t = t_part if t_part < now_ns else now_ns
        engine_now = self.engine.now
        if push_t < engine_now or not self.staleness_unchanged(k, now_ns):
            return None
        # ---- from here on the message is handled: InputSet.on_batch, FusionCore._apply
        st.last_seq = m.seq
        st.last_seen_ns = now_ns
        st.n_batches += 1
        st.n_events += m.n
        ins = self.input_set
        ins.n_batches += 1
        ins.n_events += m.n
        with nogil:
            self.add_counts(k, m.n)
        if m.n:
            st._target_synced = False  # InputState.convert: an empty batch changes nothing
            eng = self.engine
            eng.events_in += m.n
            self.push_parts(&m, k, now_ns)
            engine_now = eng.now
        # ---- FusionCore.service: crossings due (no reorder window), then the motors
        self.fire_due(now_ns, engine_now)
        return self.poll_motors(now_ns, stamp_ns)

    def on_part(self, Py_ssize_t k, channels, counts, f64 scale, i64 t_ns, i64 now_ns):
        """``clock: data``: one held part (the events of one batch at one time, already
        checked and counted on arrival by ``InputSet.on_batch``) of input ``k`` applied at
        its time ``t_ns`` with the core's clock at ``now_ns``, then serviced, with exactly the
        semantics of ``FusionCore._apply`` followed by ``FusionCore.service`` (a status due
        then is left to the caller); commands are stamped ``now_ns``. None (nothing changed):
        the Python path's turn (a reset, another scale, a time before the engine's clock, a
        staleness change, arrays it does not take)."""
        cdef const i32[::1] ch
        cdef const i32[::1] co
        cdef Py_ssize_t i, n
        cdef i64 push_t, engine_now
        cdef i64* snt
        cdef i64 size = self.size[k]
        if scale != self.scale[k]:
            return None
        try:
            ch = channels
            co = counts
        except (ValueError, TypeError):
            return None
        n = ch.shape[0]
        if co.shape[0] != n:
            return None
        for i in range(n):
            if ch[i] < 0 or ch[i] >= size:
                return None
        push_t = t_ns if t_ns < now_ns else now_ns
        engine_now = self.engine.now
        if push_t < engine_now or not self.staleness_unchanged(-1, now_ns):
            return None
        # ---- handled: InputState.convert (same scale), FusionCore._push
        if n:
            st = self.states[k]
            st._target_synced = False
            snt = self.sent[k]
            with nogil:
                for i in range(n):
                    snt[ch[i]] += co[i]
            eng = self.engine
            eng.events_in += n
            with nogil:
                self.core.push_one(push_t, self.node[k], ch, co, 0, n)
            eng.now = push_t
            eng.events_out += self.core.n_out
            self.route(now_ns, t_ns, True, push_t)
            self.core.n_out = 0
            engine_now = push_t
        # ---- FusionCore.service: crossings due (no reorder window), then the motors
        self.fire_due(now_ns, engine_now)
        return self.poll_motors(now_ns, now_ns)

    def on_payload_held(self, bytes topic, bytes payload, i64 now_ns):
        """``clock: data``: one EventBatch payload received with the core's clock at
        ``now_ns`` checked, counted and held part by part, exactly as
        ``InputSet.on_batch`` in hold mode does (the parts are EventBatch objects whose
        arrays are views of the payload); True when handled, None (nothing changed) for
        anything the Python path must handle (another kind, a seq anomaly, a scale change,
        unsorted offsets, a channel out of range, a time beyond the skew)."""
        cdef Parsed m
        cdef Py_ssize_t k, i, lo, hi
        cdef i64* rec
        cdef const u8* b = <const u8*>PyBytes_AS_STRING(payload)
        k = self.load_next(topic, payload, now_ns, &m)
        if k < 0:
            return None
        st = self.states[k]
        if st.end_announced:  # data after the end of its stream: the Python path opens it
            return None
        # ---- handled: InputSet.on_batch (check_seq in order, counted), then the parts
        st.last_seq = m.seq
        st.last_seen_ns = now_ns
        rec = self.received[k]
        with nogil:
            for i in range(m.n):
                rec[self.ch_buf[i]] += self.co_buf[i]
        ins = self.input_set
        st.n_batches += 1
        st.n_events += m.n
        ins.n_batches += 1
        ins.n_events += m.n
        sensor, inp = self.names[k]
        chs = np.frombuffer(payload, I4, m.n, m.ch - b)
        cos = np.frombuffer(payload, I4, m.n, m.co - b)
        if m.n == 0:  # a batch of no events is its own part
            part = EventBatch(sensor, m.seq, m.t_ns, inp, m.scale, chs, cos, m.epoch_ns)
            ins.schedule(st, part, False, m.t_ns, now_ns, None)
            return True
        lo = 0
        while lo < m.n:
            hi = lo + 1
            while hi < m.n and self.dt_buf[hi] == self.dt_buf[lo]:
                hi += 1
            t_part = m.t_ns + self.dt_buf[lo]
            part = EventBatch(sensor, m.seq, t_part, inp, m.scale, chs[lo:hi], cos[lo:hi], m.epoch_ns)
            ins.schedule(st, part, False, t_part, now_ns, None)
            lo = hi
        return True


# ------------------------------------------------------------------ MotorCommand reading
cdef class _MotorReader:
    """The receiving side of the MotorCommands encoded above: one actuator's commands
    (``[version, kind, actuator, seq, t_ns, cause_t_ns, values]`` on its own topic) read in
    one call, as ``spikefuse.protocol.decode`` would (the same MotorCommand, ``values`` a
    read-only view of the payload as the decoder's frombuffer), or None for anything else
    (another actuator's name, another kind, a bound or a value the decoder would reject):
    the subscriber's decoder then decides and counts. Built by
    spikefuse.core.hot.motor_reader."""

    cdef Limits lim
    cdef bytes topic
    cdef bytes name_b
    cdef str name

    def __init__(self, dict limits, str name):
        self.lim.max_abs_time_ns = limits["max_abs_time_ns"]
        self.lim.max_payload = limits["max_payload_bytes"]
        self.lim.version = limits["version"]
        self.lim.kind_motor = limits["kind_motor"]
        self.lim.motor_head = 0x90 | (2 + limits["motor_fields"])
        self.name = name
        self.name_b = name.encode()
        self.topic = b"motor/" + self.name_b

    def read(self, bytes topic, bytes payload):
        """The MotorCommand of ``[topic, payload]``, or None (not read: decode it)."""
        cdef const u8* b = <const u8*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload), pos = 1, ln, i
        cdef const u8* s
        cdef const u8* vals
        cdef i64 v, seq, t_ns, cause
        cdef uint64_t bits
        cdef f64 x
        cdef i64 tmax = self.lim.max_abs_time_ns
        if topic != self.topic or n < 1 or n > self.lim.max_payload or b[0] != self.lim.motor_head:
            return None
        if read_int(b, n, &pos, &v) != 0 or v != self.lim.version:
            return None
        if read_int(b, n, &pos, &v) != 0 or v != self.lim.kind_motor:
            return None
        if read_str(b, n, &pos, &s, &ln) != 0 or ln != PyBytes_GET_SIZE(self.name_b):
            return None
        if memcmp(s, PyBytes_AS_STRING(self.name_b), ln) != 0:
            return None
        if read_int(b, n, &pos, &seq) != 0 or seq < 0:
            return None
        if read_int(b, n, &pos, &t_ns) != 0 or not (-tmax <= t_ns <= tmax):
            return None
        if read_int(b, n, &pos, &cause) != 0 or not (-tmax <= cause <= tmax):
            return None
        if read_bin(b, n, &pos, &vals, &ln) != 0 or ln % 8 or pos != n:
            return None
        for i in range(ln // 8):
            bits = 0
            memcpy(&bits, vals + 8 * i, 8)  # little-endian host (HotPath checks)
            memcpy(&x, &bits, 8)
            if not isfinite(x):
                return None
        values = np.frombuffer(payload, F8, ln // 8, vals - b)
        return MotorCommand(self.name, seq, t_ns, cause, values)
