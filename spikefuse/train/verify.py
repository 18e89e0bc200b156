"""The converted graph against its rounding network: run the compiled engine over a
recording, push by push, and compare every node's value after every push (sample) with the
rounding network's, bit for bit; count the engine's ops over the sampled span."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikefuse.engine import Engine
from spikefuse.graph import Graph
from spikefuse.train.dataset import Recording
from spikefuse.train.fit import CHUNK, Trainer, gather


@dataclass
class Verification:
    n_samples: int
    n_values: int
    n_mismatched: int
    engine_ops: int  # syn_ops from the first sample to the last (what the engine did)
    rounding_ops: float  # the same span from the rounding network's formula

    @property
    def bit_exact(self) -> bool:
        return self.n_mismatched == 0


def verify(trainer: Trainer, graph: Graph, scales, rec: Recording) -> Verification:
    eng = Engine(graph)
    names = [nd.name for nd in trainer.arch.nodes]
    eng.start(int(rec.pushes[0][1]))
    done = 0  # pushes applied so far
    mismatched = n_values = 0
    ops0 = None
    for s in range(0, rec.n, CHUNK):
        idx = np.arange(s, min(s + CHUNK, rec.n))
        b = gather(trainer.arch, rec, idx)
        vals = [np.asarray(v) for v in trainer.fwd_q(trainer.params, scales, b.img, b.vec)]
        for j, i in enumerate(idx.tolist()):
            for name, t, ch, co in rec.pushes[done : rec.sample_push[i] + 1]:
                eng.push(t, name, ch, co)
            done = int(rec.sample_push[i]) + 1
            if ops0 is None:
                ops0 = eng.counters["syn_ops"]
            for v, node in zip(vals, names, strict=True):
                got = eng.node_value(node)
                mismatched += int(np.count_nonzero(got != v[j]))
                n_values += got.size
            got = eng.output_value(trainer.arch.output_name)
            mismatched += int(np.count_nonzero(got != vals[-1][j]))
    ev = trainer.evaluate(scales, [rec])
    return Verification(
        rec.n, n_values, mismatched, int(eng.counters["syn_ops"] - (ops0 or 0)), ev["ops"]
    )
