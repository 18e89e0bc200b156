"""``spikefuse schema [--out DIR] [--only NAME]``: JSON Schemas of every config model
(launch file, core, actuators, drivers) for editors (e.g. yaml-language-server's
``# yaml-language-server: $schema=...``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="export JSON Schemas of all config models")
    p.add_argument("--out", type=Path, default=None, help="write <name>.schema.json files here")
    p.add_argument("--only", default=None, help="one schema, e.g. launch, core, actuator.console")
    p.set_defaults(func=run)


def config_models() -> dict[str, type]:
    """Schema name -> pydantic model of every config spikefuse loads."""
    from spikefuse.actuators import actuator_kinds
    from spikefuse.agent.config import AgentConfig
    from spikefuse.core.config import CoreConfig
    from spikefuse.errors import ConfigError
    from spikefuse.launch.model import LaunchFile
    from spikefuse.sdk.registry import builtin_kinds, resolve_kind

    models: dict[str, type] = {"launch": LaunchFile, "core": CoreConfig, "agent": AgentConfig}
    for kind, spec in sorted(actuator_kinds().items()):
        models[f"actuator.{kind}"] = spec.config
    for kind in sorted(builtin_kinds()):
        try:
            models[f"driver.{kind}"] = resolve_kind(kind).config
        except (ConfigError, ImportError) as exc:
            log.warning("driver kind %s: no schema (%s)", kind, exc)
    return models


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError

    models = config_models()
    if args.only is not None:
        if args.only not in models:
            raise ConfigError(f"--only: expected one of {sorted(models)}, found {args.only!r}")
        models = {args.only: models[args.only]}
    schemas = {}
    for name, model in models.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"spikefuse:{name}"
        schema.setdefault("title", name)
        schemas[name] = schema
    if args.out is None:
        json.dump(schemas if args.only is None else schemas[args.only], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        path = args.out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        print(path)
    return 0
