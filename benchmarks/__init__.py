"""Benchmarks, run with ``spikefuse bench <name>``. Every figure is reported next to a
baseline measured in the same run, because the machines are noisy."""
