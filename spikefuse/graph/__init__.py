"""Describe fusion graphs (no execution here). See :mod:`spikefuse.graph.nodes`."""

from spikefuse.graph.graph import FORMAT_VERSION, Graph, ResolvedGraph
from spikefuse.graph.nodes import (
    ACTIVATIONS,
    Activation,
    Conv2d,
    Dense,
    Input,
    Integrator,
    Node,
    Output,
    Product,
)

__all__ = [
    "ACTIVATIONS",
    "FORMAT_VERSION",
    "Activation",
    "Conv2d",
    "Dense",
    "Graph",
    "Input",
    "Integrator",
    "Node",
    "Output",
    "Product",
    "ResolvedGraph",
]
