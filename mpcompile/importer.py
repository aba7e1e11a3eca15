"""Import a user's model file into the IR: serde import, then the canonicalizing passes."""

from __future__ import annotations

import os

from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.passes.absorb_qdq import AbsorbQDQ
from mpcompile.passes.base import run_passes
from mpcompile.passes.fold_batchnorm import FoldBatchNorm
from mpcompile.passes.infer_precisions import InferPrecisions


def canonicalize(graph: Graph) -> Graph:
    graph, _notes = run_passes(graph, [AbsorbQDQ(), FoldBatchNorm(), InferPrecisions()])
    return graph


def load(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """A model (FP32 or QDQ) or a saved plan, as an IR graph ready for planning or lowering.

    ``input_shapes`` freezes dynamic input dimensions of a model (not of a plan) before folding.
    """
    if input_shapes:
        return canonicalize(serde.import_model(path, input_shapes))
    graph = serde.load_model_or_plan(path)
    if graph.is_annotated:  # a saved plan: read back exactly, no rewriting
        return graph
    return canonicalize(graph)
