"""Loading YAML into pydantic models with errors that name file:line and the field.

Every config in spikefuse goes through :func:`load_model`:

* ``${VAR}`` and ``${VAR:-default}`` are substituted from the environment mapping given
  (``os.environ`` by default; this is the one place that reads it);
* ``--set key.sub=value`` overrides are applied (values parsed as YAML scalars);
* validation errors become :class:`ConfigError` with ``file:line: field: expected ..., found ...``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from spikefuse.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class FileConfig(StrictModel):
    """A config read from a file: relative paths inside it are relative to that file
    (``set_base_dir`` is called by the loader; the working directory until then)."""

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    def set_base_dir(self, base_dir: str | Path) -> None:
        self._base_dir = Path(base_dir)

    def resolve_path(self, p: str | Path) -> Path:
        """``p`` as an absolute path: ``~`` expanded, relative ones against the config's folder."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()

    def resolved_security(self):
        """This config's ``security`` block (core, actuator and driver configs have one)
        with its key paths relative to this file; None when it has none. Every socket of
        the process uses it."""
        security = getattr(self, "security", None)
        return None if security is None else security.resolved(self.resolve_path)


class _Located(dict):
    """A mapping that remembers the line of each key (1-based) and its own line."""

    line: int = 0
    key_lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    out = _Located()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(
                f"duplicate key '{key}'",
                f"{loader.name}:{key_node.start_mark.line + 1}",
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = value_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def substitute_env(text: str, env: Mapping[str, str], source: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        line = text.count("\n", 0, m.start()) + 1
        raise ConfigError(f"environment variable ${{{name}}} is not set", f"{source}:{line}")

    return _ENV_RE.sub(repl, text)


def load_yaml(path: str | Path, env: Mapping[str, str] | None = None) -> Any:
    """Parse a YAML file (after ``${ENV}`` substitution) keeping line numbers."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", str(path)) from None
    return parse_yaml(text, str(path), env)


def parse_yaml(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Any:
    text = substitute_env(text, os.environ if env is None else env, source)
    loader = _LineLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"YAML syntax error: {exc.problem}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", source) from None
    finally:
        loader.dispose()


def line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """Best line for a pydantic error location inside located YAML data."""
    line = getattr(data, "line", None)
    node = data
    for part in loc:
        if isinstance(node, _Located):
            if str(part) in node.key_lines:
                line = node.key_lines[str(part)]
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


def format_validation_error(exc: ValidationError, data: Any, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        field = ".".join(str(p) for p in loc) or "<root>"
        line = line_of(data, loc)
        where = f"{source}:{line}" if line else source
        found = err.get("input")
        found_s = repr(found)
        if len(found_s) > 60:
            found_s = found_s[:57] + "..."
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            lines.append(f"{where}: {field}: unknown field (not allowed here)")
        elif err.get("type") == "missing":
            lines.append(f"{where}: {field}: required field is missing")
        else:
            lines.append(f"{where}: {field}: {msg}; found {found_s}")
    return "\n".join(lines)


def validate_data(model: type[M], data: Any, source: str) -> M:
    """Validate already-parsed data into ``model``; errors name source:line and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, data, source)) from None


def apply_overrides(data: Any, overrides: list[str] | None, source: str = "--set") -> Any:
    """Apply ``a.b.c=value`` overrides; the value is parsed as a YAML scalar/flow value."""
    if not overrides:
        return data
    if data is None:
        data = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value", source)
        key, _, raw = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override '{item}' has an empty key", source)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': bad value: {exc}", source) from None
        node = data
        for i, p in enumerate(parts[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(p)]
                    continue
                except (ValueError, IndexError):
                    raise ConfigError(f"override '{item}': no list index '{p}'", source) from None
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override '{item}': '{'.'.join(parts[: i + 1])}' is not a mapping", source
                )
            node = node.setdefault(p, {})
        last = parts[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError(f"override '{item}': no list index '{last}'", source) from None
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override '{item}': parent is not a mapping", source)
    return data


def load_model(
    model: type[M],
    path: str | Path,
    overrides: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> M:
    """Load ``path`` (YAML) into ``model``. Raises :class:`ConfigError` naming file:line/field."""
    data = load_yaml(path, env)
    data = apply_overrides(data, overrides)
    return validate_data(model, data if data is not None else {}, str(path))
