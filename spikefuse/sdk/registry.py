"""Driver specs, kind lookup, config loading and the process entry point.

A driver is a :class:`DriverSpec`: a kind name, a config model (a :class:`DriverConfig`
subclass) and a source generator function. :func:`driver` makes one by decoration. Kinds
shipped with spikefuse are listed in ``spikefuse.drivers.KINDS`` (name -> ``module:attr``);
:func:`resolve_kind` also accepts ``package.module:attr`` and ``path/to/file.py:attr``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spikefuse.config import apply_overrides, load_yaml, validate_data
from spikefuse.errors import BusError, ConfigError, SpikefuseError
from spikefuse.sdk.config import DriverConfig
from spikefuse.sdk.items import Item
from spikefuse.sdk.runner import DriverContext, Runner, Sender
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.publisher import Publisher

log = logging.getLogger(__name__)

SourceFn = Callable[[DriverConfig, DriverContext], Iterable[Item]]


@dataclass(frozen=True)
class DriverSpec:
    kind: str
    config: type[DriverConfig]
    source: SourceFn
    description: str = ""


def driver(kind: str, config: type[DriverConfig]) -> Callable[[SourceFn], DriverSpec]:
    """Decorator: ``@driver("thermo", ThermoConfig)`` on a source generator function makes
    the module attribute a :class:`DriverSpec`."""
    if not issubclass(config, DriverConfig):
        raise TypeError(f"{config.__name__} must subclass spikefuse.sdk.DriverConfig")

    def wrap(fn: SourceFn) -> DriverSpec:
        doc = (fn.__doc__ or "").strip().splitlines()
        return DriverSpec(kind, config, fn, doc[0] if doc else kind)

    return wrap


def builtin_kinds() -> Mapping[str, str]:
    from spikefuse.drivers import KINDS

    return KINDS


def resolve_kind(kind: str) -> DriverSpec:
    """A built-in kind (``imu``), ``package.module:attr`` or ``path/file.py:attr``."""
    table = builtin_kinds()
    target = table.get(kind)
    if target is None:
        if ":" not in kind:
            raise ConfigError(
                f"unknown driver kind '{kind}'; built-in kinds: {', '.join(sorted(table))} "
                "(or give module:attr / file.py:attr)"
            )
        target = kind
    modname, _, attr = target.rpartition(":")
    module = _import(modname)
    spec = getattr(module, attr, None)
    if not isinstance(spec, DriverSpec):
        raise ConfigError(f"'{target}' is not a DriverSpec (decorate the source with @driver)")
    return spec


def _import(modname: str):
    if modname.endswith(".py"):
        path = Path(modname).resolve()
        if not path.is_file():
            raise ConfigError(f"driver file {path} not found")
        mod_id = f"_spikefuse_driver_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(mod_id, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import driver file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_id] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import driver module '{modname}': {exc}") from None


def load_driver_config(
    spec: DriverSpec, path: str | Path | None = None, overrides: list[str] | None = None
) -> DriverConfig:
    """Load (YAML file and/or ``key=value`` overrides) and validate a driver's config.
    Relative paths inside it are resolved against the file's directory."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data if data is not None else {}, overrides)
    source = str(path) if path is not None else "--set"
    cfg = validate_data(spec.config, data, source)
    cfg.set_base_dir(Path(path).resolve().parent if path is not None else Path.cwd())
    return cfg


def run_driver(spec: DriverSpec, cfg: DriverConfig, sender: Sender | None = None) -> int:
    """Run ``spec`` with ``cfg`` until its source ends or SIGINT/SIGTERM; returns 0.

    Publishes on ``cfg.resolved_endpoint()`` (bound) unless a ``sender`` is given."""
    with StopSignal() as stop:
        if sender is not None:
            return Runner(cfg, spec.source, sender, stop).run()
        endpoint = cfg.resolved_endpoint()
        if endpoint.startswith("ipc://"):
            Path(endpoint[len("ipc://") :]).parent.mkdir(parents=True, exist_ok=True)
        with Publisher(endpoint, bind=True, hwm=cfg.hwm, security=cfg.resolved_security()) as pub:
            log.info("%s driver '%s' publishing on %s", spec.kind, cfg.name, endpoint)
            if cfg.wait_for_subscribers:
                _wait_for_subscribers(pub, cfg, stop)
            return Runner(cfg, spec.source, pub, stop).run()


def _wait_for_subscribers(pub: Publisher, cfg: DriverConfig, stop: StopSignal) -> None:
    # subscribers to this driver's data (sensor/<name>): a subscription to its status
    # only (the core's status/<name>) is not one more subscriber
    topics = [f"sensor/{cfg.name}".encode()]
    n, timeout_s = cfg.wait_for_subscribers, cfg.wait_for_subscribers_timeout_s
    if not pub.wait_for_subscribers(n, timeout_s, topics, lambda: stop.requested):
        log.warning(
            "%s: %d of %d subscribers after %.3g s; starting anyway",
            cfg.name,
            pub.n_waited_for(topics),
            n,
            timeout_s,
        )


def add_driver_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="driver config YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted key, YAML value); repeatable",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )


def run_from_args(spec: DriverSpec, args: argparse.Namespace) -> int:
    cfg = load_driver_config(spec, args.config, args.overrides)
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return 0
    try:
        return run_driver(spec, cfg)
    except BusError as exc:
        raise ConfigError(f"cannot publish on {cfg.resolved_endpoint()}: {exc}") from None


def main(spec: DriverSpec, argv: list[str] | None = None) -> int:
    """Entry point for a driver file run directly (``python my_driver.py --config x.yaml``)."""
    parser = argparse.ArgumentParser(prog=spec.kind, description=spec.description)
    add_driver_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run_from_args(spec, args)
    except ConfigError as exc:
        print(f"{spec.kind}: error: {exc}", file=sys.stderr)
        return 2
    except SpikefuseError as exc:
        print(f"{spec.kind}: error: {exc}", file=sys.stderr)
        return 1
