"""The fusion core's closing summary: what the event-driven pipeline saved and cost.

Per sensor stream, the events sent against the raw values sampled (from the drivers' own
Status counters, which the core listens to); the engine's synaptic ops against the same
graph run densely (:class:`~spikefuse.engine.dense.DenseExecutor`, every node at every
sample of the fastest stream); sensor -> motor latency as the histogram knows it; and
where every motor command went."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spikefuse.engine.dense import DenseExecutor

if TYPE_CHECKING:
    from spikefuse.core.fusion import FusionCore
    from spikefuse.protocol import Status

NS_PER_S = 1_000_000_000


def _int(v: object) -> int | None:
    return v if type(v) is int and v >= 0 else None


def stream_rates(first: Status, last: Status) -> dict[str, tuple[float, float, float]]:
    """input -> (samples/s, values/s, events/s) between two Status messages of one driver
    (counters that are missing or not counters are skipped: a Status is free-form)."""
    dt_s = (last.t_ns - first.t_ns) / NS_PER_S
    g0, g1 = first.metrics.get("groups"), last.metrics.get("groups")
    if dt_s <= 0 or not isinstance(g0, dict) or not isinstance(g1, dict):
        return {}
    out = {}
    for name, m1 in g1.items():
        m0 = g0.get(name)
        if not isinstance(m1, dict) or not isinstance(m0, dict):
            continue
        items = [_int(m.get("n_items")) for m in (m0, m1)]
        events = [_int(m.get("n_events")) for m in (m0, m1)]
        width = _int(m1.get("values_per_item"))
        inp = m1.get("input")
        if None in items or None in events or not width or not isinstance(inp, str):
            continue
        samples_per_s = (items[1] - items[0]) / dt_s
        out[inp] = (samples_per_s, samples_per_s * width, (events[1] - events[0]) / dt_s)
    return out


def _streams_table(core: FusionCore) -> tuple[list[str], float]:
    head = f"{'samples/s':>10} {'values/s':>10} {'events/s':>10} {'ev/value':>8}"
    rows = [f"  {'stream':<20} {head}"]
    fastest = 0.0
    for st in core.inputs.values():
        pair = core.sensor_status.get(st.cfg.sensor)
        rates = stream_rates(*pair) if pair else {}
        name = f"{st.cfg.sensor}/{st.cfg.input or st.name}"
        r = rates.get(st.cfg.input or st.name)
        if r is None:
            rows.append(f"  {name:<20} {'(no driver status)':>32}")
            continue
        fastest = max(fastest, r[0])
        share = f"{100 * r[2] / r[1]:.1f} %" if r[1] else "-"
        rows.append(f"  {name:<20} {r[0]:>10.1f} {r[1]:>10.1f} {r[2]:>10.1f} {share:>8}")
    return rows, fastest


def _engine_line(core: FusionCore, uptime_s: float, fastest_hz: float) -> str:
    ops = core.engine.counters["syn_ops"]
    if fastest_hz <= 0:
        return f"  engine: {ops:,} ops event-driven (no sample rate known for a dense run)"
    dense = DenseExecutor(core.graph).ops_per_step * fastest_hz * uptime_s
    saving = f"{dense / ops:.0f}x fewer" if ops else "none needed"
    return (
        f"  engine: {ops:,} ops event-driven vs {dense:,.0f} for the same graph run densely "
        f"at {fastest_hz:.0f} Hz for {uptime_s:.1f} s: {saving}"
    )


def _motor_lines(core: FusionCore) -> list[str]:
    lines = []
    for name, motor in core.motors.items():
        unheard = core.n_unheard[name]
        before = core.n_unheard_startup.get(name, 0)
        # answers to heartbeats (clock: data) go out without a poll; what they superseded
        # did not go out
        published = motor.n_published + core.n_answered - core.n_superseded[name]
        superseded = ""
        if core.n_superseded[name]:
            superseded = (
                f"; {core.n_superseded[name]} superseded by their heartbeat's answer (not sent)"
            )
        lines.append(
            f"  motor '{name}': {published} published = "
            f"{published - unheard - _dropped(core, name)} to a listening actuator"
            f" + {before} before one subscribed + {unheard - before} after it left"
            f" + {_dropped(core, name)} refused at the high-water mark;"
            f" {motor.n_coalesced} value changes superseded before they went out{superseded}"
        )
    return lines


def _dropped(core: FusionCore, name: str) -> int:
    return core.n_motor_dropped_by.get(name, 0)


def _inputs_line(core: FusionCore) -> str:
    """The inputs' states at the end: ended (their sensors closed their streams) apart
    from stale (silent: a fault), and how often any went stale."""
    n = core.input_states()
    n_stale = sum(st.n_stale for st in core.inputs.values())
    return (
        f"  inputs at the end: {n['live']} live, {n['ended']} ended (their sensor closed its "
        f"stream), {n['stale']} stale (silent past timeout_s); {n_stale} times stale in all"
    )


def summary(core: FusionCore, now_ns: int) -> str:
    uptime_s = max((now_ns - core.start_ns) / NS_PER_S, 1e-9)
    drops = ", ".join(f"{k}={v}" for k, v in sorted(core.drops.items())) or "none"
    rows, fastest = _streams_table(core)
    n_start = sum(st.n_startup_resyncs for st in core.inputs.values())
    n_start_counts = sum(st.n_startup_resync_counts for st in core.inputs.values())
    n_later = sum(st.n_resyncs for st in core.inputs.values()) - n_start
    lines = [
        f"core '{core.cfg.name}': {core.n_batches} batches, {core.n_events} events in, "
        f"{core.n_motor_commands} motor commands, {core.engine.counters['syn_ops']} synaptic "
        f"ops, drops: {drops}",
        *rows,
        _engine_line(core, uptime_s, fastest),
        f"  latency sensor -> motor command: {core.latency.describe()}",
        *_motor_lines(core),
        f"  keyframes: {n_start} start-up catch-ups ({n_start_counts} counts sent before the "
        f"subscription was complete), {n_later} later corrections",
        _inputs_line(core),
    ]
    return "\n".join(lines)
