"""Import a user's model file into the IR: serde import, then the canonicalizing passes."""

from __future__ import annotations

import os
import warnings
from typing import Any

from mpcompile.data.model import model_inputs
from mpcompile.data.shapes import shapes_from_data
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.passes.absorb_qdq import AbsorbQDQ
from mpcompile.passes.base import run_passes
from mpcompile.passes.fold_batchnorm import FoldBatchNorm
from mpcompile.passes.infer_precisions import InferPrecisions


def canonicalize(graph: Graph) -> Graph:
    graph, _notes = run_passes(graph, [AbsorbQDQ(), FoldBatchNorm(), InferPrecisions()])
    return graph


#: operators that compute shapes at run time; left after import, they mean a backend with static shapes cannot
#: run the model (their Shape → ... → Reshape chains fold away once the inputs' dims are known)
RUNTIME_SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "Range"})


def load(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None, data: Any = None) -> Graph:
    """A model (FP32 or QDQ) or a saved plan, as an IR graph ready for planning or lowering.

    ``input_shapes`` freezes dynamic input dimensions of a model (not of a plan) before folding.
    Without them, ``data`` (the calibration data) freezes what it fixes unambiguously
    (``mpcompile.data.shapes``): every dynamic dimension after the first that all its samples share,
    and the batch as 1 where the model would still compute shapes at run time. A warning says what
    was frozen and how to choose otherwise; ``graph.metadata["mpcompile.input_shapes_from_data"]`` records it.
    """
    if input_shapes:
        return canonicalize(serde.import_model(path, input_shapes))
    graph = serde.load_model_or_plan(path)
    if graph.is_annotated:  # a saved plan: read back exactly, no rewriting
        return graph
    graph = canonicalize(graph)
    if data is None:
        return graph
    return _freeze_from_data(path, graph, data)


def _computes_shapes(graph: Graph) -> bool:
    return any(node.op_type in RUNTIME_SHAPE_OPS for node in graph.nodes)


def _freeze_from_data(path: str | os.PathLike, graph: Graph, data: Any) -> Graph:
    inputs = model_inputs(graph)
    shapes = shapes_from_data(inputs, data)
    frozen = canonicalize(serde.import_model(path, shapes)) if shapes else graph
    if _computes_shapes(frozen):
        with_batch = shapes_from_data(inputs, data, freeze_batch=True)
        if with_batch != shapes:
            shapes, frozen = with_batch, canonicalize(serde.import_model(path, with_batch))
    if not shapes:
        return graph
    text = " ".join(f"{name}={'x'.join(str(d) if isinstance(d, int) else '-1' for d in frozen.tensors[name].shape)}"
                    for name in shapes)
    frozen.metadata["mpcompile.input_shapes_from_data"] = text
    warnings.warn(f"{path}: froze the model's dynamic input dimensions from the calibration data: {text} "
                  f"(pass --input-shape NAME=DIMS to choose others, -1 to keep a dimension dynamic)", stacklevel=3)
    return frozen
