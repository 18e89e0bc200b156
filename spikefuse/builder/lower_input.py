from spikefuse.builder.model import BuildContext, lowers
from spikefuse.graph.nodes import Input


@lowers(Input)
def lower_input(ctx: BuildContext, i: int, node: Input) -> None:
    """An Input has no weights and no incoming edges: its kind (set by the builder) is all."""
