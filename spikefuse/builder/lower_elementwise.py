"""Activation, Output and Product: one unit in, one unit out."""

from spikefuse.builder.model import (
    E_ELEM,
    E_PROD_A,
    E_PROD_B,
    BuildContext,
    lowers,
)
from spikefuse.graph.graph import _src_list
from spikefuse.graph.nodes import Activation, Output, Product


def _fan_one(ctx: BuildContext, sources: list[str]) -> None:
    for src in sources:
        ctx.unit_fanout[ctx.units(ctx.index[src])] += 1


@lowers(Activation)
def lower_activation(ctx: BuildContext, i: int, node: Activation) -> None:
    ctx.set_activation(i, node)
    ctx.connect(i, node.sources, E_ELEM)
    _fan_one(ctx, node.sources)


@lowers(Output)
def lower_output(ctx: BuildContext, i: int, node: Output) -> None:
    ctx.connect(i, node.sources, E_ELEM)
    _fan_one(ctx, node.sources)


@lowers(Product)
def lower_product(ctx: BuildContext, i: int, node: Product) -> None:
    ctx.connect(i, _src_list(node.a), E_PROD_A)
    ctx.connect(i, _src_list(node.b), E_PROD_B)
    _fan_one(ctx, node.sources)
