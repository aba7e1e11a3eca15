"""A model's data: the input specs an IR graph declares, and any data source opened against them."""

from __future__ import annotations

from typing import Any

from mpcompile.data.dataset import Dataset
from mpcompile.data.dispatch import open_dataset
from mpcompile.data.specs import InputSpec
from mpcompile.errors import DataError
from mpcompile.ir.graph import Graph


def model_inputs(graph: Graph) -> list[InputSpec]:
    specs = []
    for name in graph.inputs:
        t = graph.tensor(name)
        specs.append(InputSpec(name, tuple(t.shape) if t.shape is not None else (), t.dtype or "float32"))
    return specs


def open_data(graph: Graph, data: Any, preprocess: Any = None) -> Dataset:
    """``data`` (a path, ``module:function``, or a ``Dataset``) validated against ``graph``'s inputs."""
    if data is None:
        raise DataError(f"model {graph.name!r} needs calibration data for an integer plan: pass --data (an .npz keyed by input names)")
    if isinstance(data, Dataset):
        return data
    return open_dataset(data, model_inputs(graph), preprocess=preprocess)
