"""``spikefuse bench NAME [--json]``: benchmarks live in ``benchmarks/bench_<name>.py``
(installed as ``spikefuse.benchmarks``). Each module exposes ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> BenchResult``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys


def _bench_modules() -> dict[str, str]:
    import spikefuse.benchmarks as pkg

    return {
        m.name.removeprefix("bench_"): f"spikefuse.benchmarks.{m.name}"
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name.startswith("bench_")
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (prints a table; --json for JSON)")
    bsub = p.add_subparsers(dest="bench_name", metavar="NAME")
    bsub.required = True
    for name, modname in sorted(_bench_modules().items()):
        module = importlib.import_module(modname)
        bp = bsub.add_parser(name, help=getattr(module, "DESCRIPTION", name))
        bp.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(bp)
        bp.set_defaults(func=_make_runner(module))


def _make_runner(module):
    def run(args: argparse.Namespace) -> int:
        result = module.run(args)
        if args.json:
            json.dump(result.fields, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(result.render())
        return 0

    return run
