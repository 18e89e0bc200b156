"""The fusion graph: a named collection of nodes, validated as a whole.

Edges carry quantized changes. Cycles are allowed only through an Integrator (its input
changes only its slope; its output spikes happen later, at scheduled crossing times).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from spikefuse.errors import ConfigError, GraphError
from spikefuse.graph.nodes import (
    NODE_TYPES,
    Activation,
    AnyNode,
    AvgPool2d,
    Conv2d,
    Dense,
    Input,
    Integrator,
    Node,
    Output,
    Product,
)

FORMAT_VERSION = 1
_MANIFEST_KEY = "__graph__.json"


def _node_from_dict(data: Any, where: str) -> Node:
    if not isinstance(data, dict):
        raise GraphError(f"{where}: a node must be a mapping, found {type(data).__name__}")
    name = data.get("name", "<unnamed>")
    kind = data.get("type")
    if kind not in NODE_TYPES:
        raise GraphError(
            f"unknown node type {kind!r}; expected one of {sorted(NODE_TYPES)}", str(name), "type"
        )
    try:
        return NODE_TYPES[kind].model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or None
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        raise GraphError(msg, str(name), field) from None


@dataclass(frozen=True)
class ResolvedGraph:
    """A validated graph: every node has its size, and ``order`` is a topological order of
    the instantaneous sub-graph (edges into Integrators removed)."""

    name: str
    nodes: dict[str, Node]
    order: tuple[str, ...]

    def consumers(self, name: str) -> list[str]:
        return [n for n, node in self.nodes.items() if name in node.sources]


class Graph:
    """Describe a fusion graph in Python::

    g = Graph("mlp")
    g.input("x", size=784, scale=50)
    g.dense("h", "x", W1, b1, activation="relu", scale=50)
    g.output("y", "h", scale=100)
    """

    def __init__(self, name: str = "graph", nodes: Iterable[Node] = ()):
        self.name = name
        self.nodes: dict[str, Node] = {}
        for n in nodes:
            self.add(n)

    # -- building -------------------------------------------------------------------------
    def add(self, node: Node) -> str:
        if not isinstance(node, Node):
            raise GraphError(f"expected a Node, found {type(node).__name__}")
        if node.name in self.nodes:
            raise GraphError("duplicate node name", node.name, "name")
        self.nodes[node.name] = node
        return node.name

    def _make(self, cls: type[Node], **kw: Any) -> str:
        kw = {k: v for k, v in kw.items() if v is not None or k in ("tau_s",)}
        try:
            node = cls(**kw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err.get("loc", ())) or None
            raise GraphError(err.get("msg", "invalid"), str(kw.get("name")), field) from None
        return self.add(node)

    def input(self, name: str, size: int, scale: float = 100.0) -> str:
        return self._make(Input, name=name, size=size, scale=scale)

    def dense(
        self, name, source, weights, bias=None, activation="identity", scale=100.0, lo=None, hi=None
    ) -> str:
        return self._make(
            Dense,
            name=name,
            source=source,
            weights=weights,
            bias=bias,
            activation=activation,
            scale=scale,
            lo=lo,
            hi=hi,
        )

    def conv2d(
        self,
        name,
        source,
        in_shape,
        kernels,
        bias=None,
        stride=(1, 1),
        padding=(0, 0),
        activation="identity",
        scale=100.0,
        lo=None,
        hi=None,
    ) -> str:
        return self._make(
            Conv2d,
            name=name,
            source=source,
            in_shape=in_shape,
            kernels=kernels,
            bias=bias,
            stride=stride,
            padding=padding,
            activation=activation,
            scale=scale,
            lo=lo,
            hi=hi,
        )

    def avgpool2d(self, name, source, in_shape, kernel, stride=None, padding=(0, 0), scale=100.0):
        return self._make(
            AvgPool2d,
            name=name,
            source=source,
            in_shape=in_shape,
            kernel=kernel,
            stride=stride,
            padding=padding,
            scale=scale,
        )

    def activation(self, name, source, fn="relu", scale=100.0, lo=None, hi=None) -> str:
        return self._make(
            Activation, name=name, source=source, activation=fn, scale=scale, lo=lo, hi=hi
        )

    def product(self, name, a, b, scale=100.0) -> str:
        return self._make(Product, name=name, a=a, b=b, scale=scale)

    def integrator(
        self, name, source, gain=1.0, tau_s=None, y0=0.0, scale=100.0, max_crossing_rate_hz=1e6
    ) -> str:
        return self._make(
            Integrator,
            name=name,
            source=source,
            gain=gain,
            tau_s=tau_s,
            y0=y0,
            scale=scale,
            max_crossing_rate_hz=max_crossing_rate_hz,
        )

    def output(self, name, source, scale=100.0) -> str:
        return self._make(Output, name=name, source=source, scale=scale)

    # -- validation -----------------------------------------------------------------------
    def resolve(self) -> ResolvedGraph:
        """Validate the whole graph; raise :class:`GraphError` naming the node and field."""
        if not self.nodes:
            raise GraphError("the graph has no nodes")
        nodes = dict(self.nodes)
        _check_sources(nodes)
        order = _topo_order(nodes)
        # sizes known without looking at sources (so cycles through integrators resolve);
        # the others are resolved from their sources, iterating to a fixed point
        sizes: dict[str, int] = {n: nodes[n].size for n in order if nodes[n].fixed_size}
        resolved: dict[str, Node] = {}
        pending = list(order)
        while pending:
            rest = [n for n in pending if not _resolve_node(nodes[n], sizes, resolved)]
            if len(rest) == len(pending):
                raise GraphError(
                    "size cannot be resolved (cycle of nodes without explicit size)",
                    rest[0],
                    "size",
                )
            pending = rest
        ordered = {n: resolved[n] for n in order}
        return ResolvedGraph(self.name, ordered, tuple(order))

    # -- files ----------------------------------------------------------------------------
    def to_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(manifest, arrays): arrays are referenced from the manifest as ``"@key"``."""
        arrays: dict[str, np.ndarray] = {}
        out_nodes = []
        for node in self.nodes.values():
            d = node.model_dump(by_alias=True, exclude_none=True)
            for k in list(d):
                v = getattr(node, k, None)
                if isinstance(v, np.ndarray):
                    key = f"{node.name}.{k}"
                    arrays[key] = v
                    d[k] = "@" + key
            out_nodes.append(d)
        manifest = {"format_version": FORMAT_VERSION, "name": self.name, "nodes": out_nodes}
        return manifest, arrays

    def save(self, path: str | Path) -> Path:
        """Save as one ``.npz`` file (manifest JSON + arrays) with a format version."""
        path = Path(path)
        manifest, arrays = self.to_dict()
        buf = io.BytesIO()
        np.savez(
            buf,
            **arrays,
            **{_MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)},
        )
        path.write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            return cls.from_yaml(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                if _MANIFEST_KEY not in z.files:
                    raise ConfigError("not a spikefuse graph file (no manifest)", str(path))
                manifest = json.loads(z[_MANIFEST_KEY].tobytes().decode())
                arrays = {k: z[k] for k in z.files if k != _MANIFEST_KEY}
        except FileNotFoundError:
            raise ConfigError("file not found", str(path)) from None
        except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read graph file: {exc}", str(path)) from None
        return cls.from_dict(manifest, arrays, str(path))

    @classmethod
    def from_dict(
        cls, manifest: Any, arrays: dict[str, np.ndarray] | None, source: str = "<graph>"
    ) -> Graph:
        if not isinstance(manifest, dict):
            raise ConfigError("graph must be a mapping", source)
        version = manifest.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ConfigError(
                f"unsupported graph format_version {version!r} (this build reads 1..{FORMAT_VERSION})",
                source,
            )
        unknown = set(manifest) - {"format_version", "name", "nodes", "weights"}
        if unknown:
            raise ConfigError(f"unknown top-level keys {sorted(unknown)}", source)
        nodes = manifest.get("nodes")
        if not isinstance(nodes, list):
            raise ConfigError("'nodes' must be a list", source)
        arrays = arrays or {}
        g = cls(str(manifest.get("name", "graph")))
        for i, nd in enumerate(nodes):
            if isinstance(nd, dict):
                nd = dict(nd)
                for k, v in list(nd.items()):
                    if isinstance(v, str) and v.startswith("@"):
                        key = v[1:]
                        if key not in arrays:
                            raise GraphError(
                                f"array '{key}' not found in weights file",
                                str(nd.get("name", i)),
                                k,
                            )
                        nd[k] = arrays[key]
            g.add(_node_from_dict(nd, f"{source}: nodes[{i}]"))
        return g

    @classmethod
    def from_yaml(cls, path: str | Path) -> Graph:
        """YAML graph: ``nodes:`` list; array fields are inline lists or ``"@key"`` naming an
        array in the ``weights:`` npz file (path relative to the YAML file)."""
        from spikefuse.config import load_yaml

        path = Path(path)
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError("a graph file must be a mapping", str(path))
        arrays: dict[str, np.ndarray] = {}
        wfile = data.get("weights")
        if wfile is not None:
            wpath = (path.parent / str(wfile)).resolve()
            try:
                with np.load(wpath, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise ConfigError(
                    f"cannot read weights file '{wfile}': {exc}", f"{path}:weights"
                ) from None
        return cls.from_dict(dict(data), arrays, str(path))


def _check_sources(nodes: dict[str, Node]) -> None:
    for name, node in nodes.items():
        for field, src in _source_fields(node):
            if src not in nodes:
                raise GraphError(f"unknown source node '{src}'", name, field)
            if isinstance(nodes[src], Output):
                raise GraphError(f"source '{src}' is an Output (a sink)", name, field)
            if src == name and not isinstance(node, Integrator):
                raise GraphError("a node cannot feed itself except an Integrator", name, field)


def _resolve_node(node: Node, sizes: dict[str, int], resolved: dict[str, Node]) -> bool:
    """Check ``node`` against its sources' sizes (the node type's size rule) and record it;
    False while a source's size is still unknown."""
    port_sizes = {}
    for field, srcs in node.source_fields().items():
        total = _sum_sizes(srcs, sizes)
        if total is None:
            return False
        port_sizes[field] = total
    resolved[node.name] = node.resolve_size(port_sizes)
    sizes[node.name] = resolved[node.name].size
    return True


def _src_list(src: str | list[str]) -> list[str]:
    return [src] if isinstance(src, str) else list(src)


def _source_fields(node: Node) -> list[tuple[str, str]]:
    return [(field, s) for field, srcs in node.source_fields().items() for s in srcs]


def _sum_sizes(srcs: list[str], sizes: dict[str, int]) -> int | None:
    total = 0
    for s in srcs:
        if s not in sizes:
            return None
        total += sizes[s]
    return total


def _topo_order(nodes: dict[str, Node]) -> list[str]:
    """Kahn's algorithm on edges not entering an Integrator; insertion order breaks ties."""
    indeg = {n: 0 for n in nodes}
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for name, node in nodes.items():
        if isinstance(node, Integrator):
            continue
        for src in dict.fromkeys(node.sources):
            indeg[name] += 1
            out[src].append(name)
    ready = [n for n in nodes if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in out[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(nodes):
        stuck = next(n for n in nodes if n not in order)
        raise GraphError("cycle without an Integrator", stuck, "source")
    return order


__all__ = ["Graph", "ResolvedGraph", "FORMAT_VERSION", "AnyNode"]
