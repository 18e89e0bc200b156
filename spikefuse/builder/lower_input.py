from spikefuse.builder.model import K_INPUT, BuildContext, lowers
from spikefuse.graph.nodes import Input


@lowers(Input)
def lower_input(ctx: BuildContext, i: int, node: Input) -> None:
    ctx.kind[i] = K_INPUT
