"""A model's data: the input specs an IR graph declares, and any data source opened against them."""

from __future__ import annotations

from typing import Any

from mpcompile.data.dataset import Dataset
from mpcompile.data.dispatch import open_dataset
from mpcompile.data.specs import InputSpec
from mpcompile.errors import DataError
from mpcompile.ir.graph import Graph


def _batch_symbol(shapes: list[tuple]) -> str | None:
    """The name of the batch dim: the one name the inputs give their first dim (never guessed otherwise:
    a single input of shape (1, T, 80) takes its samples on axis 0, whatever T is called)."""
    first = {shape[0] for shape in shapes if shape and isinstance(shape[0], str)}
    return first.pop() if len(first) == 1 else None


def sample_axis(shape: tuple, batch: str | None) -> int:
    """Where an input takes its samples: axis 0, unless its first dim is fixed and a later one is the batch
    dim that the other inputs have first (an LSTM/GRU state ``[D, batch, H]`` beside an ``[batch, T, F]`` input)."""
    if not shape or not isinstance(shape[0], int) or batch is None or batch not in shape:
        return 0
    return shape.index(batch)


def model_inputs(graph: Graph) -> list[InputSpec]:
    shapes = [tuple(graph.tensor(name).shape or ()) for name in graph.inputs]
    batch = _batch_symbol(shapes)
    specs = []
    for name, shape in zip(graph.inputs, shapes):
        axis = sample_axis(shape, batch)
        data_shape = (shape[axis], *shape[:axis], *shape[axis + 1:]) if axis else shape
        specs.append(InputSpec(name, data_shape, graph.tensor(name).dtype or "float32", axis))
    return specs


def open_data(graph: Graph, data: Any, preprocess: Any = None) -> Dataset:
    """``data`` (a path, ``module:function``, or a ``Dataset``) validated against ``graph``'s inputs."""
    if data is None:
        raise DataError(f"model {graph.name!r} needs calibration data for an integer plan: pass --data (an .npz keyed by input names)")
    if isinstance(data, Dataset):
        return data
    return open_dataset(data, model_inputs(graph), preprocess=preprocess)
