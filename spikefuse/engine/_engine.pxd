# Shared ctypedefs and the declaration of the compiled event loop. Private: use
# spikefuse.engine.Engine, which validates every argument before calling in here.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t

ctypedef double f64
ctypedef int64_t i64
ctypedef int32_t i32
ctypedef uint8_t u8

cdef struct OutEvent:
    i64 t_ns
    i32 output
    i32 channel
    f64 value


@cython.final
cdef class Core:
    # --- the lowered model (read-only) ---
    cdef i64 n_nodes, n_units
    cdef i32[::1] node_kind
    cdef i64[::1] node_off
    cdef i64[::1] node_size
    cdef i32[::1] node_act
    cdef f64[::1] node_lo
    cdef f64[::1] node_hi
    cdef i64[::1] node_wptr
    cdef i64[:, ::1] node_conv
    cdef i32[::1] node_output  # output index of Output nodes, -1 otherwise
    cdef i64[::1] edge_ptr
    cdef i32[::1] edge_kind
    cdef i32[::1] edge_target
    cdef i64[::1] edge_in_off
    cdef f64[::1] weights
    cdef f64[::1] scale
    cdef i64[::1] fanout
    cdef f64[::1] gain
    cdef f64[::1] inv_tau
    cdef i64[::1] min_gap  # least ns between two crossings of a unit (max_crossing_rate_hz)
    cdef i32[::1] node_of_unit
    # --- state ---
    cdef public i64 now
    cdef i64[::1] sent
    cdef f64[::1] acc
    cdef f64[::1] xa
    cdef f64[::1] xb
    cdef f64[::1] xint
    cdef f64[::1] y
    cdef i64[::1] t_last
    cdef i64[::1] direction
    cdef i64[::1] last_dir
    cdef i64[::1] t_fire  # time of the unit's last crossing (NEVER_FIRED before the first)
    cdef u8[::1] deferred  # its scheduled crossing was pushed back by min_gap
    cdef f64[::1] plo  # dense/conv pre-filter: no level crossing while plo < acc < phi
    cdef f64[::1] phi
    cdef u8[::1] node_dirty
    cdef u8[::1] node_all_dirty
    cdef u8[::1] unit_dirty
    cdef i32[::1] dirty_list
    cdef i64[::1] dirty_count
    # indexed binary heap of integrator crossings, ordered by (t, unit)
    cdef i64[::1] heap_t
    cdef i32[::1] heap_u
    cdef i32[::1] heap_pos
    cdef i64 heap_n
    # counters
    cdef i64[::1] spikes
    cdef public i64 syn_ops, n_saturated, n_crossings, spikes_in
    # output buffer
    cdef OutEvent* out
    cdef i64 n_out, cap_out
    cdef public bint latest_only  # fold the buffer to each output's last event (fold)
    cdef public i64 n_folded  # events folded away (counted in events_out)
    cdef i64 n_outputs
    cdef i64[::1] last_at  # fold's scratch: index of each output's last event

    cdef int record(self, i64 t, i32 output, i32 channel, f64 value) except -1 nogil
    cdef void fold(self) noexcept nogil
    cdef int emit(self, i64 s, i64 i, i64 n, i64 t) except -1 nogil
    cdef void conv_spike(self, i64 tgt, i64 r, f64 d) noexcept nogil
    cdef void pool_spike(self, i64 tgt, i64 r, f64 d) noexcept nogil
    cdef void mark(self, i64 node, i64 j) noexcept nogil
    cdef f64 value(self, i64 node, i64 j) noexcept nogil
    cdef int send(self, i64 node, i64 j, f64 v, i64 t) except -1 nogil
    cdef void set_bounds(self, i64 node, i64 j) noexcept nogil
    cdef int settle(self, i64 t) except -1 nogil
    cdef void reschedule(self, i64 u, i64 t) noexcept nogil
    cdef void schedule(self, i64 u, i64 t) noexcept nogil
    cdef int fire_due(self, i64 t_end) except -1 nogil
    cdef int push_one(self, i64 t, i64 node, const i32[::1] channels, const i32[::1] counts,
                      i64 lo, i64 hi) except -1 nogil
    cdef void heap_set(self, i64 u, i64 t) noexcept nogil
    cdef void heap_remove(self, i64 u) noexcept nogil
    cdef void heap_swap(self, i64 a, i64 b) noexcept nogil
    cdef bint heap_less(self, i64 a, i64 b) noexcept nogil
    cdef void sift_up(self, i64 i) noexcept nogil
    cdef void sift_down(self, i64 i) noexcept nogil
