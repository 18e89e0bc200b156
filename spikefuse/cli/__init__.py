"""The ``spikefuse`` command. Each subcommand lives in its own ``cmd_<name>.py`` module in
this package and exposes ``register(subparsers)``; modules are discovered, not listed,
so adding a command is adding a file."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from spikefuse._version import __version__
from spikefuse.errors import ConfigError, SpikefuseError

# optional packages -> the extra that installs them (pyproject.toml [project.optional-dependencies])
OPTIONAL_EXTRAS = {
    "matplotlib": "plot",
    "rosbags": "logs",
    "pyulog": "logs",
    "aedat": "logs",
    "serial": "serial",
    "vqf": "attitude",
    "cv2": "camera",
    "rerun": "view",
    "pyNN": "nest",
    "nest": "nest",
    "jax": "train",
    "optax": "train",
    "spynnaker": "spinnaker",
    "spinnman": "spinnaker",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikefuse",
        description="Event-driven multi-rate sensor fusion with sigma-delta change-events.",
    )
    parser.add_argument("--version", action="version", version=f"spikefuse {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    pkg = sys.modules[__name__]
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            module.register(sub)
    _describe(sub)
    return parser


def _describe(sub: argparse._SubParsersAction) -> None:
    """A subcommand without a description of its own shows its one-line help on top of its
    ``--help`` (nested subcommands too)."""
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        if p.description is None and helps.get(name):
            h = helps[name]
            p.description = h[0].upper() + h[1:] + ("" if h.endswith(".") else ".")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _describe(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc = args.func(args)
    except ConfigError as exc:
        print(f"spikefuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except SpikefuseError as exc:
        print(f"spikefuse {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in OPTIONAL_EXTRAS:
            raise
        print(
            f"spikefuse {args.command}: error: this needs the optional package '{top}': "
            f"pip install 'spikefuse[{OPTIONAL_EXTRAS[top]}]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
