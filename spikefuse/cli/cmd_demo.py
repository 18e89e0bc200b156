"""``spikefuse demo [--duration S]``: the demo graph on a built-in synthetic multi-rate
stream (gyro 1 kHz, accel 200 Hz, camera 30 Hz DVS events), in process, no sockets.

Prints what happened: events in per input, spikes per node, synaptic ops against a dense
frame-based evaluation of the same graph at the fastest sensor rate, and the outputs."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="in-process demo: synthetic multi-rate stream through the demo graph",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=5.0, metavar="S", help="stream length (s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.core.demo import RATES_HZ, build_demo_graph, synthetic_stream
    from spikefuse.engine import Engine
    from spikefuse.engine.dense import DenseExecutor
    from spikefuse.errors import ConfigError

    if not 0 < args.duration <= 3600:
        raise ConfigError(f"--duration: expected 0 < S <= 3600, found {args.duration}")
    graph = build_demo_graph()
    engine = Engine(graph)
    engine.start(0)
    events_in = dict.fromkeys(engine.input_names, 0)
    batches_in = dict.fromkeys(engine.input_names, 0)
    n_out_changes = 0
    t0 = time.perf_counter()
    for b in synthetic_stream(args.duration):
        ev = engine.push(b.t_ns, b.input, b.channels, b.counts)
        events_in[b.input] += int(b.channels.size)
        batches_in[b.input] += 1
        n_out_changes += int(ev.size)
    ev = engine.advance(round(args.duration * 1e9))
    n_out_changes += int(ev.size)
    wall_s = time.perf_counter() - t0
    c = engine.counters
    n_steps = round(args.duration * max(RATES_HZ.values()))
    dense_ops = DenseExecutor(graph).ops_per_step * n_steps
    _print_report(
        args.duration, engine, events_in, batches_in, n_out_changes, c, dense_ops, n_steps, wall_s
    )
    return 0


def _print_report(
    duration_s, engine, events_in, batches_in, n_out_changes, c, dense_ops, n_steps, wall_s
):
    from spikefuse.core.demo import RATES_HZ

    print(f"spikefuse demo: {duration_s:g} s of synthetic sensor data through graph 'demo'")
    print("\nevents in (sigma-delta / DVS change events):")
    for name, n in events_in.items():
        print(f"  {name:<8} {RATES_HZ[name]:>6g} Hz  {batches_in[name]:>7} batches  {n:>8} events")
    print("\nspikes per node:")
    for name, n in c["spikes"].items():
        print(f"  {name:<8} {n:>9}")
    syn = c["syn_ops"]
    ratio = syn / dense_ops if dense_ops else float("nan")
    print(
        f"\ncompute: {syn} synaptic ops event-driven vs {dense_ops} for a dense loop at "
        f"{max(RATES_HZ.values()):g} Hz ({n_steps} steps): {ratio:.4f}x ({1 / ratio:.0f}x fewer)"
    )
    print(f"integrator crossings: {c['n_crossings']}, output changes: {n_out_changes}")
    for name in engine.output_names:
        vals = " ".join(f"{v:+.3f}" for v in engine.output_value(name))
        print(f"output {name}: [{vals}]")
    print(f"(processed in {wall_s * 1e3:.0f} ms wall time, {duration_s / wall_s:.0f}x real time)")
