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
from mpcompile.passes.div_by_constant import DivByConstant
from mpcompile.passes.fold_batchnorm import FoldBatchNorm
from mpcompile.passes.fold_bias_add import FoldBiasAdd
from mpcompile.passes.infer_precisions import InferPrecisions


def canonicalize(graph: Graph) -> Graph:
    graph, _notes = run_passes(graph, [AbsorbQDQ(), FoldBatchNorm(), FoldBiasAdd(), DivByConstant(), InferPrecisions()])
    return graph


def load(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None, data: Any = None) -> Graph:
    """A model (FP32 or QDQ) or a saved plan, as an IR graph ready for planning or lowering.

    ``input_shapes`` freezes dynamic input dimensions of a model (not of a plan) before folding.
    Without them, ``data`` (the calibration data, or a list: calibration and evaluation data) freezes what it
    fixes unambiguously (``mpcompile.data.shapes``): every dynamic dimension after the first that all its
    samples share. The plan is calibrated at those sizes, so they are frozen for every backend; the batch is
    not (it changes no sample's values): a backend that cannot compute shapes at run time freezes it when it
    lowers (``Capabilities.static_shapes``). A warning says what was frozen and how to choose otherwise;
    ``graph.metadata["mpcompile.input_shapes_from_data"]`` records it.
    """
    if input_shapes:
        return canonicalize(serde.import_model(path, input_shapes))
    model = serde.read_model(path)
    if serde.is_plan(model):  # a saved plan: read back exactly, no rewriting
        return serde.plan_from_proto(model, source=str(path))
    # The data is read against the inputs the file declares, before the one import (which folds with them).
    shapes = shapes_from_data(model_inputs(serde.declared_inputs(model)), data) if data is not None else {}
    if not shapes:
        return canonicalize(serde.import_proto(model, source=str(path)))
    return _frozen_from_data(path, model, shapes)


def _frozen_from_data(path: str | os.PathLike, model: Any, shapes: dict[str, tuple[int | None, ...]]) -> Graph:
    frozen = canonicalize(serde.import_proto(model, source=str(path), input_shapes=shapes))
    text = " ".join(f"{name}={'x'.join(str(d) if isinstance(d, int) else '-1' for d in frozen.tensors[name].shape)}"
                    for name in shapes)
    frozen.metadata["mpcompile.input_shapes_from_data"] = text
    warnings.warn(f"{path}: froze the model's dynamic input dimensions from the data: {text} "
                  f"(pass --input-shape NAME=DIMS to choose others, -1 to keep a dimension dynamic)", stacklevel=3)
    return frozen
