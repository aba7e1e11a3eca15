"""Input shapes read from the data: what to freeze in a model with dynamic input dimensions.

Backends with static shapes (TFLite, shape subgraphs that must fold) need every dimension of a
model's inputs, yet most real exports leave some dynamic (a sequence length, an image size, the
batch). When the user gives no ``--input-shape``, the calibration data says what the model will
see: :func:`shapes_from_data` proposes those sizes, dimension by dimension, only where the data
agrees with itself.

* a dynamic dimension after the first takes the data's size when every sample looked at has the
  same one (an ``.npz`` array always does); where samples disagree it stays dynamic. The plan is
  calibrated at those sizes, so they hold for every backend;
* the first (sample, batch) dimension stays dynamic: the batch changes no sample's values, so the
  plan does not fix it. Only a backend that cannot compute shapes at run time gets it frozen, to 1
  (:func:`batch_of_one`, applied when lowering for that backend: ``mpcompile.passes.freeze_batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mpcompile.data.specs import InputSpec, _is_static
from mpcompile.errors import MpcompileError

#: samples looked at to decide that the data agrees on a dimension (sources other than arrays)
PEEK_SAMPLES = 8


def _sample_shapes(data: Any, inputs: Sequence[InputSpec]) -> dict[str, set[tuple[int, ...]]]:
    from mpcompile.data.dataset import Dataset
    from mpcompile.data.dispatch import open_dataset

    dataset = data if isinstance(data, Dataset) else open_dataset(data, list(inputs))
    seen: dict[str, set[tuple[int, ...]]] = {spec.name: set() for spec in inputs}
    axes = {spec.name: spec.sample_axis for spec in inputs}
    for batch in dataset.batches(1, limit=PEEK_SAMPLES):
        for name, array in batch.items():
            if name in seen:  # one sample's shape, in the data's order (the sample axis taken out)
                seen[name].add(tuple(int(d) for i, d in enumerate(array.shape) if i != axes[name]))
    return seen


def _model_order(spec: InputSpec, dims: Sequence[int | None]) -> tuple[int | None, ...]:
    """``dims`` of the data (samples first) in the order of the model's dims (samples on ``spec.sample_axis``)."""
    axis = spec.sample_axis
    return (*dims[1:axis + 1], dims[0], *dims[axis + 1:]) if axis else tuple(dims)


def batch_of_one(inputs: Sequence[InputSpec]) -> dict[str, tuple[int | None, ...]]:
    """Per input with a dynamic batch (samples) dimension: that dimension as 1, the others left as they are (None)."""
    return {spec.name: _model_order(spec, (1, *[None] * (spec.rank - 1)))
            for spec in inputs if spec.rank and not _is_static(spec.shape[0])}


def shapes_from_data(inputs: Sequence[InputSpec], data: Any) -> dict[str, tuple[int | None, ...]]:
    """Per input with a dimension to freeze: its dims (None = left as the model has it). Empty when the data
    fixes nothing, cannot be read, or disagrees with itself (its errors are reported where it is used).

    ``data`` is one source or a list of them (calibration and evaluation data): a dimension is frozen only
    where every source agrees, so that a model evaluated at another size than it is calibrated at (a
    detector on larger pages) stays dynamic there."""
    # Nothing to freeze means the data is not read at all (a callable source may be slow or one-shot).
    dynamic = [spec for spec in inputs if any(not _is_static(d) for d in spec.shape[1:])]  # shape: samples first
    sources = [d for d in (data if isinstance(data, (list, tuple)) else [data]) if d is not None]
    if not dynamic or not sources:
        return {}
    seen: dict[str, set[tuple[int, ...]]] = {spec.name: set() for spec in dynamic}
    try:
        for source in sources:
            for name, shapes in _sample_shapes(source, dynamic).items():
                seen[name] |= shapes
    except MpcompileError:
        return {}
    result: dict[str, tuple[int | None, ...]] = {}
    for spec in dynamic:
        shapes = seen.get(spec.name) or set()
        dims: list[int | None] = [None] * spec.rank
        for axis in range(1, spec.rank):
            sizes = {shape[axis - 1] for shape in shapes if len(shape) == spec.rank - 1}
            if not _is_static(spec.shape[axis]) and len(sizes) == 1:
                dims[axis] = sizes.pop()
        if any(d is not None for d in dims):
            result[spec.name] = _model_order(spec, dims)
    return result


__all__ = ["PEEK_SAMPLES", "batch_of_one", "shapes_from_data"]
