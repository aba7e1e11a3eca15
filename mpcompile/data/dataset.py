"""The :class:`Dataset` base class: batching, sample limits, extra arrays; helpers shared by the sources."""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mpcompile.data.specs import InputSpec, _check_positive, _fmt_shape, _static_batch, effective_batch_size
from mpcompile.errors import DataError


class Dataset:
    """A source of model inputs; iterate it with :meth:`batches`.

    Attributes: ``source`` (a human-readable description used in messages), ``inputs``
    (the model inputs it feeds), ``num_samples`` (``None`` while unknown, i.e. for
    callables before a full pass).
    """

    source: str
    inputs: tuple[InputSpec, ...]
    num_samples: int | None

    def __init__(self, source: str, inputs: Iterable[InputSpec]) -> None:
        self.source = source
        self.inputs = tuple(inputs)
        if not self.inputs:
            raise DataError(f"{source}: the model has no inputs to feed; check the model file")
        _static_batch(self.inputs)  # fails early on inconsistent fixed batch dims
        self.num_samples = None

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError(f"{self.source}: the number of samples is not known before the data has been iterated")
        return self.num_samples

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source}, {self.num_samples} samples>"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def effective_batch_size(self, batch_size: int) -> int:
        """Samples per model run for the requested ``batch_size`` (see :func:`effective_batch_size`)."""
        return effective_batch_size(self.inputs, batch_size)

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield feed dicts of ``effective_batch_size(batch_size)`` samples (the last one may be smaller).

        ``limit`` caps the total number of samples (``--samples N``). Arrays are validated,
        cast to each input's dtype and C-contiguous, and an input whose model takes its samples
        on another axis (``InputSpec.sample_axis``) gets them there. With a fixed batch dim k > 1 the final
        partial batch is dropped with a warning.
        """
        size = self.effective_batch_size(batch_size)
        if limit is not None:
            limit = _check_positive("sample limit", limit)
        static = _static_batch(self.inputs)
        batches = self._rebatch(size, limit, drop_partial=static is not None and static > 1)
        moved = {spec.name: spec.sample_axis for spec in self.inputs if spec.sample_axis}
        if not moved:
            return batches
        return ({k: np.ascontiguousarray(np.moveaxis(v, 0, moved[k])) if k in moved else v for k, v in feeds.items()}
                for feeds in batches)

    @property
    def extra_names(self) -> tuple[str, ...]:
        """Names of the arrays that are not model inputs (e.g. ``labels``)."""
        return ()

    def extra_arrays(self, limit: int | None = None) -> dict[str, np.ndarray]:
        """The non-input arrays (e.g. labels for evaluation), each cut to its first ``limit`` rows."""
        return {}

    @property
    def extra(self) -> dict[str, np.ndarray]:
        """All non-input arrays; same as ``extra_arrays()``."""
        return self.extra_arrays()

    # -- for subclasses -------------------------------------------------------------

    def _chunks(self, chunk_size: int, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        """Validated, cast arrays with a leading sample axis, in order; any number of samples each."""
        raise NotImplementedError

    def _rebatch(self, size: int, limit: int | None, drop_partial: bool) -> Iterator[dict[str, np.ndarray]]:
        names = self.input_names
        pending: deque[dict[str, np.ndarray]] = deque()
        n_pending = 0
        seen = 0

        def take(n: int) -> dict[str, np.ndarray]:
            nonlocal n_pending
            parts: list[dict[str, np.ndarray]] = []
            need = n
            while need:
                chunk = pending[0]
                count = len(chunk[names[0]])
                if count <= need:
                    parts.append(pending.popleft())
                    need -= count
                else:
                    parts.append({k: v[:need] for k, v in chunk.items()})
                    pending[0] = {k: v[need:] for k, v in chunk.items()}
                    need = 0
            n_pending -= n
            if len(parts) == 1:
                return {k: np.ascontiguousarray(v) for k, v in parts[0].items()}
            batch = {}
            for k in names:
                try:
                    batch[k] = np.concatenate([p[k] for p in parts])
                except ValueError as exc:
                    shapes = sorted({p[k].shape[1:] for p in parts})
                    raise DataError(
                        f"{self.source}: samples of input '{k}' have different shapes "
                        f"({', '.join(_fmt_shape(s) for s in shapes)}) and cannot be batched together; "
                        "pad or resize them to one shape, or use batch size 1"
                    ) from exc
            return batch

        for chunk in self._chunks(size, limit):
            count = len(chunk[names[0]])
            if limit is not None and seen + count > limit:
                count = limit - seen
                chunk = {k: v[:count] for k, v in chunk.items()}
            if count == 0:
                continue
            seen += count
            pending.append(chunk)
            n_pending += count
            while n_pending >= size:
                yield take(size)
            if limit is not None and seen >= limit:
                break
        if seen == 0:
            raise DataError(f"{self.source} contains no samples; provide at least one sample per model input")
        if self.num_samples is None and limit is None:
            self.num_samples = seen
        if drop_partial and seen < size:
            inputs = ", ".join(repr(n) for n in names)
            raise DataError(
                f"{self.source}: input {inputs} has a batch dimension fixed to {size} (by the model or --input-shape), "
                f"but only {seen} sample(s) are given, so no batch can be formed (freeze the batch at {seen} or "
                f"fewer with --input-shape, keep it dynamic with -1, or give at least {size} samples)"
            )
        if n_pending:
            if drop_partial:
                warnings.warn(
                    f"{self.source}: the model's batch dim is fixed to {size}; the last {n_pending} sample(s) "
                    "do not fill a batch and are skipped",
                    stacklevel=2,
                )
            else:
                yield take(n_pending)


def _stack_single(arr: np.ndarray, single: bool) -> np.ndarray:
    return arr[np.newaxis] if single else arr


def _list_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    suffixes = frozenset(suffixes)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
