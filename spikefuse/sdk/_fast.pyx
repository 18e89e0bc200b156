# The driver SDK's per-sample path, compiled: the sigma-delta step, the running totals and
# the EventBatch wire bytes. The oracles are the pure-numpy SigmaDeltaEncoder.encode
# (spikefuse/encoding.py) and protocol.Encoder (tests/test_sdk_fast.py holds them equal,
# byte for byte on the wire).

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport copysign, fabs, floor, isfinite, isnan
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef double MAX_TARGET = 9007199254740992.0  # 2**53: beyond it k*v is not exact
cdef double I32_MAX = 2147483647.0
cdef int64_t MAX_ABS_TIME_NS = 1LL << 62
cdef int64_t MAX_DT_NS = 86400LL * 1000000000LL
cdef Py_ssize_t MAX_NAME_LEN = 256
cdef object I4 = np.dtype("<i4")
cdef object I8 = np.dtype("<i8")


cdef inline double _send_count(double r, double threshold) noexcept nogil:
    """encoding.send_counts of one residual: round half away where |r| > threshold (1/2
    plus the encoder's hysteresis), else 0."""
    if fabs(r) > threshold:
        return copysign(floor(fabs(r) + 0.5), r) + 0.0
    return 0.0


cdef class SigmaDeltaStep:
    """The sigma-delta step of one encoder, on its own ``scale`` and ``sent`` arrays (shared
    with the Python object, updated in place): :meth:`encode` returns new (channels, counts)
    int32 arrays of the nonzero counts; the channels skipped or saturated by the last call
    are in ``last_nonfinite``, ``last_out_of_range``, ``last_saturated`` (``last_bad``: any).
    With ``smoothed`` (the encoder's moving-average state, shared) and ``smooth_gain`` < 1
    each channel quantizes its moving average (SigmaDeltaEncoder.smooth).
    The same arithmetic as SigmaDeltaEncoder.encode, which is its oracle."""

    cdef const double[::1] scale
    cdef int64_t[::1] sent
    cdef double[::1] smoothed
    cdef double smooth_gain
    cdef public double threshold  # the encoder sets it per sample (its rest hysteresis)
    cdef int32_t[::1] ch
    cdef int32_t[::1] co
    cdef public int last_nonfinite, last_out_of_range, last_saturated
    cdef public bint last_bad

    def __init__(
        self,
        const double[::1] scale,
        int64_t[::1] sent,
        double threshold=0.5,
        double[::1] smoothed=None,
        double smooth_gain=1.0,
    ):
        if scale.shape[0] != sent.shape[0]:
            raise ValueError("scale and sent differ in length")
        if smooth_gain != 1.0 and (smoothed is None or smoothed.shape[0] != sent.shape[0]):
            raise ValueError("smoothing needs a smoothed array as long as sent")
        self.scale = scale
        self.sent = sent
        self.threshold = threshold
        self.smoothed = smoothed
        self.smooth_gain = smooth_gain
        self.ch = np.empty(sent.shape[0], np.int32)
        self.co = np.empty(sent.shape[0], np.int32)

    def encode(self, const double[::1] values):
        cdef Py_ssize_t i, n = 0, nch = self.sent.shape[0]
        cdef int n_nonfinite = 0, n_range = 0, n_sat = 0
        cdef double target, delta, x
        cdef int64_t d
        cdef bint smooth = self.smooth_gain != 1.0
        if values.shape[0] != nch:
            raise ValueError(f"values have shape ({values.shape[0]},), expected ({nch},)")
        for i in range(nch):
            x = values[i]
            if smooth and isfinite(x):
                if isnan(self.smoothed[i]):
                    self.smoothed[i] = x
                else:
                    self.smoothed[i] = self.smoothed[i] + self.smooth_gain * (x - self.smoothed[i])
                x = self.smoothed[i]
            target = self.scale[i] * x
            if not isfinite(target):
                n_nonfinite += 1
                continue
            if fabs(target) > MAX_TARGET:
                n_range += 1
                continue
            delta = _send_count(target - <double>self.sent[i], self.threshold)
            if fabs(delta) > I32_MAX:
                n_sat += 1
                delta = I32_MAX if delta > 0 else -I32_MAX
            d = <int64_t>delta
            if d != 0:
                self.sent[i] += d
                self.ch[n] = <int32_t>i
                self.co[n] = <int32_t>d
                n += 1
        self.last_nonfinite = n_nonfinite
        self.last_out_of_range = n_range
        self.last_saturated = n_sat
        self.last_bad = (n_nonfinite + n_range + n_sat) != 0
        cdef cnp.npy_intp dims = n
        out_ch = cnp.PyArray_EMPTY(1, &dims, cnp.NPY_INT32, 0)
        out_co = cnp.PyArray_EMPTY(1, &dims, cnp.NPY_INT32, 0)
        if n:
            memcpy(cnp.PyArray_DATA(out_ch), &self.ch[0], 4 * n)
            memcpy(cnp.PyArray_DATA(out_co), &self.co[0], 4 * n)
        return out_ch, out_co


def add_totals(int64_t[::1] totals, const int32_t[::1] ch, const int32_t[::1] co):
    """``totals[ch[i]] += co[i]``; when a channel lies beyond ``totals`` nothing is added
    and the size needed (highest channel + 1) is returned, else 0."""
    cdef Py_ssize_t i, top = 0
    for i in range(ch.shape[0]):
        if ch[i] >= top:
            top = ch[i] + 1
    if top > totals.shape[0]:
        return top
    for i in range(ch.shape[0]):
        totals[ch[i]] += co[i]
    return 0


# ----------------------------------------------------------------------- msgpack writing


cdef inline Py_ssize_t _put_uint(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int k, n
    if v < 128:
        p[0] = <uint8_t>v
        return 1
    if v < 256:
        p[0] = 0xCC
        n = 1
    elif v < 65536:
        p[0] = 0xCD
        n = 2
    elif v < 4294967296ULL:
        p[0] = 0xCE
        n = 4
    else:
        p[0] = 0xCF
        n = 8
    for k in range(n):
        p[1 + k] = <uint8_t>(v >> (8 * (n - 1 - k)))
    return 1 + n


cdef inline Py_ssize_t _put_int(uint8_t* p, int64_t v) noexcept nogil:
    cdef int k, n
    cdef uint64_t u
    if v >= 0:
        return _put_uint(p, <uint64_t>v)
    if v >= -32:
        p[0] = <uint8_t>(v & 0xFF)
        return 1
    if v >= -128:
        p[0] = 0xD0
        n = 1
    elif v >= -32768:
        p[0] = 0xD1
        n = 2
    elif v >= -2147483648LL:
        p[0] = 0xD2
        n = 4
    else:
        p[0] = 0xD3
        n = 8
    u = <uint64_t>v
    for k in range(n):
        p[1 + k] = <uint8_t>(u >> (8 * (n - 1 - k)))
    return 1 + n


cdef inline Py_ssize_t _put_len(uint8_t* p, Py_ssize_t n, uint8_t c8, uint8_t c16, uint8_t c32) noexcept nogil:
    if n < 256:
        p[0] = c8
        p[1] = <uint8_t>n
        return 2
    if n < 65536:
        p[0] = c16
        p[1] = <uint8_t>(n >> 8)
        p[2] = <uint8_t>n
        return 3
    p[0] = c32
    p[1] = <uint8_t>(n >> 24)
    p[2] = <uint8_t>(n >> 16)
    p[3] = <uint8_t>(n >> 8)
    p[4] = <uint8_t>n
    return 5


cdef inline Py_ssize_t _put_str(uint8_t* p, bytes s) noexcept:
    cdef Py_ssize_t n = len(s), h
    if n < 32:
        p[0] = 0xA0 | <uint8_t>n
        h = 1
    else:
        h = _put_len(p, n, 0xD9, 0xDA, 0xDB)
    memcpy(p + h, PyBytes_AS_STRING(s), n)
    return h + n


cdef inline Py_ssize_t _put_bin(uint8_t* p, const char* data, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t h = _put_len(p, n, 0xC4, 0xC5, 0xC6)
    if n:
        memcpy(p + h, data, n)
    return h + n


cdef inline Py_ssize_t _put_double(uint8_t* p, double x) noexcept nogil:
    cdef uint64_t u
    cdef int k
    memcpy(&u, &x, 8)
    p[0] = 0xCB
    for k in range(8):
        p[1 + k] = <uint8_t>(u >> (8 * (7 - k)))
    return 9


cdef inline bint _time_ok(object v):
    return type(v) is int and -MAX_ABS_TIME_NS <= v <= MAX_ABS_TIME_NS


cdef inline bytes _name_bytes(object v):
    if type(v) is not str or not 0 < len(<str>v) <= MAX_NAME_LEN:
        return None
    return (<str>v).encode("utf-8")


def pack_event_batch(batch):
    """The payload bytes of an EventBatch (exactly ``protocol.encode(batch)``), or None when
    a field is not in the plain form this writer handles (then the reference encoder is
    used: it encodes it or raises the ProtocolError naming the field)."""
    return pack_batch(
        batch.sensor,
        batch.seq,
        batch.t_ns,
        batch.input,
        batch.scale,
        batch.channels,
        batch.counts,
        batch.epoch_offset_ns,
        batch.dt_ns,
    )


def pack_batch(sensor, seq, t_ns, input, scale, channels, counts, epoch_offset_ns, dt_ns):
    """:func:`pack_event_batch` of the EventBatch of these fields (in its order), without
    building it (the SDK's per-sample path)."""
    cdef bytes sensor_b = _name_bytes(sensor)
    cdef bytes inp = _name_bytes(input)
    if sensor_b is None or inp is None or not _seq_ok(seq):
        return None
    if not (_time_ok(t_ns) and _time_ok(epoch_offset_ns)) or not _scale_ok(scale):
        return None
    return _pack(sensor_b, inp, seq, t_ns, epoch_offset_ns, scale, channels, counts, dt_ns)


cdef inline bint _seq_ok(object seq):
    return type(seq) is int and 0 <= seq < (1 << 63)


cdef inline bint _scale_ok(object scale):
    if type(scale) is not float:
        return False
    cdef double k = scale
    return isfinite(k) and k > 0


cdef object _pack(bytes sensor, bytes inp, object seq, object t_ns, object epoch, double k,
                  object ch, object co, object dt):
    """The payload of checked scalar fields and the arrays ``ch``, ``co``, ``dt`` (checked
    here), or None."""
    if type(ch) is not np.ndarray or type(co) is not np.ndarray:
        return None
    if ch.dtype != I4 or co.dtype != I4 or ch.ndim != 1 or co.ndim != 1:
        return None
    cdef const int32_t[::1] chv
    cdef const int32_t[::1] cov
    cdef const int64_t[::1] dtv
    try:
        chv = ch
        cov = co
    except ValueError:  # not contiguous
        return None
    cdef Py_ssize_t i, n = chv.shape[0]
    if cov.shape[0] != n:
        return None
    for i in range(n):
        if chv[i] < 0:
            return None
    cdef bint has_dt = dt is not None
    if has_dt:
        if type(dt) is not np.ndarray or dt.dtype != I8 or dt.ndim != 1:
            return None
        try:
            dtv = dt
        except ValueError:
            return None
        if dtv.shape[0] != n:
            return None
        for i in range(n):
            if not 0 <= dtv[i] <= MAX_DT_NS:
                return None
    cdef Py_ssize_t size = 3 + (5 + len(sensor)) + (5 + len(inp)) + 3 * 9 + 9 + 3 * (5 + 8 * n) + 1
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t w = 0
    p[0] = 0x9B  # fixarray of 11: version, kind, 9 fields
    p[1] = 1  # PROTOCOL_VERSION
    p[2] = 1  # KIND_EVENT_BATCH
    w = 3
    w += _put_str(p + w, sensor)
    w += _put_uint(p + w, <uint64_t>(<int64_t>seq))
    w += _put_int(p + w, <int64_t>t_ns)
    w += _put_int(p + w, <int64_t>epoch)
    w += _put_str(p + w, inp)
    w += _put_double(p + w, k)
    w += _put_bin(p + w, <const char*>&chv[0] if n else NULL, 4 * n)
    w += _put_bin(p + w, <const char*>&cov[0] if n else NULL, 4 * n)
    if has_dt:
        w += _put_bin(p + w, <const char*>&dtv[0] if n else NULL, 8 * n)
    else:
        p[w] = 0xC0
        w += 1
    return out[:w]
