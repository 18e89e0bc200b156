# Raw compute kernels used as same-run baselines by the benchmarks (the "roofline"):
# what the hardware does for the bare synaptic work, with no event bookkeeping.
from spikefuse.engine._engine cimport f64, i32, i64


cdef void _row_accumulate(const f64[:, ::1] w, const i32[::1] rows, const f64[::1] d,
                          f64[::1] acc) noexcept nogil:
    cdef i64 n_out = w.shape[1]
    cdef i64 r, j
    cdef const f64* wp
    cdef f64* ap = &acc[0]
    cdef f64 dd
    for r in range(rows.shape[0]):
        wp = &w[rows[r], 0]
        dd = d[r]
        for j in range(n_out):
            ap[j] = ap[j] + wp[j] * dd


def row_accumulate(const f64[:, ::1] w, const i32[::1] rows, const f64[::1] d, f64[::1] acc):
    """acc += w[rows[r]] * d[r] for every r (arguments validated by the caller)."""
    with nogil:
        _row_accumulate(w, rows, d, acc)
