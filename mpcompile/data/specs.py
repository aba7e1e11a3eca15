"""What the model expects of its data, and the checks of data against it.

:class:`InputSpec` is one model input (name, shape with dynamic dims, dtype). The checks
here are shared by every source:

Missing inputs, rank and fixed-dim mismatches (with a transpose/squeeze/expand hint when
the data fits after one), dtypes, empty data and inconsistent sample counts raise
:class:`~mpcompile.errors.DataError` naming the file or input, what was expected and how
to fix it. The first (sample) axis is never checked against the model's batch dim; the
batch size fed to the model is :func:`effective_batch_size`.

Dtypes: floats cast to a float input silently (float64 -> float32); integers and bools
cast to a float input when every value is exactly representable (uint8 images -> float32
is fine, int64 above 2**24 that float32 cannot hold is an error); integers cast to an
integer input when the values fit its range; integers to a bool input when they are all
0/1; float data for an integer or bool input is an error (round it explicitly). Float
inputs must be finite (NaN/Inf is an error).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpcompile.errors import DataError

Dim = int | str | None


# --------------------------------------------------------------------------------------
# Input specs and shape formatting
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One model input, as the model declares it.

    ``shape`` holds ints for fixed dims and a name (``"batch"``) or ``None`` for dynamic
    dims; a non-positive int is treated as dynamic too. ``dtype`` is normalized to
    ``np.dtype``. ``shape`` is the shape of the *data*, samples first; ``sample_axis`` is where
    the model takes them (1 for a recurrence's ``[D, batch, H]`` state): batches are fed with
    that axis moved there (``model_inputs`` sets both from the model's declared shape).
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    sample_axis: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def display_shape(self) -> str:
        """The shape with dynamic dims shown by name, e.g. ``(batch, 3, 224, 224)``."""
        return _fmt_shape(self.shape)


def _is_static(dim: Dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _fmt_dim(dim: Dim) -> str:
    if _is_static(dim):
        return str(dim)
    if isinstance(dim, str) and dim:
        return dim
    return "?"


def _fmt_shape(shape: Iterable[Dim]) -> str:
    dims = [_fmt_dim(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _dims_match(expected: tuple[Dim, ...], got: tuple[int, ...]) -> bool:
    return len(expected) == len(got) and all(not _is_static(e) or e == g for e, g in zip(expected, got))


def _static_batch(inputs: Iterable[InputSpec]) -> int | None:
    """The fixed leading (batch) dim shared by the inputs, if any input fixes it."""
    fixed: dict[int, str] = {}
    for spec in inputs:
        if spec.rank and _is_static(spec.shape[0]):
            fixed.setdefault(int(spec.shape[0]), spec.name)
    if len(fixed) > 1:
        desc = ", ".join(f"'{name}' has {dim}" for dim, name in fixed.items())
        raise DataError(
            f"the model's inputs have different fixed first dims ({desc}); the first axis is the "
            "sample (batch) axis of every input, so export the model with one batch dim shared by all inputs"
        )
    return next(iter(fixed), None)


def effective_batch_size(inputs: Iterable[InputSpec], batch_size: int) -> int:
    """The number of samples to feed per model run.

    ``batch_size`` unless an input fixes its first (batch) dim: a model with input shape
    ``(1, 3, 224, 224)`` is fed one sample at a time whatever ``batch_size`` asks, and a
    fixed batch dim of k > 1 is fed exactly k samples (a final partial batch is dropped).
    """
    _check_positive("batch size", batch_size)
    static = _static_batch(inputs)
    return batch_size if static is None else static


def _check_positive(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"the {what} must be a positive number of samples, got {value!r}; pass an integer >= 1")
    return int(value)


# --------------------------------------------------------------------------------------
# Shape and dtype validation
# --------------------------------------------------------------------------------------


_NAMED_PERMUTATIONS = {
    (0, 3, 1, 2): "looks like NHWC data for an NCHW model",
    (0, 2, 3, 1): "looks like NCHW data for an NHWC model",
    (2, 0, 1): "looks like HWC data for a CHW model",
    (1, 2, 0): "looks like CHW data for an HWC model",
}


def _shape_hint(spec: InputSpec, got: tuple[int, ...]) -> str:
    """A one-phrase fix when the data fits the input after a transpose, squeeze or expand_dims."""
    full = spec.shape
    candidates: list[tuple[tuple[Dim, ...], bool]] = [(full, True)]  # (expected shape, has sample axis)
    if full:
        candidates.append((full[1:], False))
    # A permutation of the axes (the sample axis stays first).
    for expected, has_samples in candidates:
        if len(expected) != len(got) or not 2 <= len(got) <= 6:
            continue
        first = 1 if has_samples else 0
        exp_tail = expected[first:]
        matches = []
        for tail in itertools.permutations(range(first, len(got))):
            perm = tuple(range(first)) + tail
            if perm != tuple(range(len(got))) and _dims_match(exp_tail, tuple(got[i] for i in tail)):
                matches.append(perm)
        if matches:
            named = [p for p in matches if p in _NAMED_PERMUTATIONS]
            perm = named[0] if named else matches[0]
            what = _NAMED_PERMUTATIONS.get(perm, "the axes look permuted")
            return f"{what}: transpose it with x.transpose{perm}"
    # An extra size-1 axis (the sample axis itself is never compared with the model's batch dim).
    if len(got) == len(full) + 1:
        for axis in range(1, len(got)):
            reduced = got[:axis] + got[axis + 1 :]
            if got[axis] == 1 and _dims_match(full[1:], reduced[1:]):
                return f"it has an extra axis of size 1: remove it with np.squeeze(x, axis={axis})"
    # A missing size-1 axis (e.g. the channel axis of grayscale data).
    for axis in range(1, len(full)):
        if len(got) + 1 == len(full) and _is_static(full[axis]) and full[axis] == 1:
            fixed = got[:axis] + (1,) + got[axis:]
            if _dims_match(full[1:], fixed[1:]):
                return f"it lacks an axis of size 1: add it with np.expand_dims(x, axis={axis})"
    fixed_dims = [f"dim {i}={d}" for i, d in enumerate(full) if i > 0 and _is_static(d)]
    if fixed_dims:
        return "the model fixes " + ", ".join(fixed_dims) + ": reshape, resize or crop the data to match"
    return "save the data with the input's rank (first axis = samples)"


def _check_array_shape(spec: InputSpec, shape: tuple[int, ...], where: str) -> bool:
    """Check one array's shape against ``spec``; return True if it is a single sample (no sample axis)."""
    shape = tuple(int(d) for d in shape)
    rank = spec.rank
    if rank == 0:
        raise DataError(
            f"{where}: input '{spec.name}' is a scalar (rank 0), which cannot take a sample axis; "
            "export the model with a leading batch dim on this input"
        )
    if len(shape) == rank:
        single, sample = False, shape[1:]
    elif len(shape) == rank - 1:
        single, sample = True, shape
    else:
        single, sample = False, None
    if sample is None or not _dims_match(spec.shape[1:], sample):
        if sample is None:
            problem = " (wrong rank)"
        elif len(shape) == rank:
            problem = " (a fixed dim differs)"
        else:
            problem = ""
        raise DataError(
            f"{where}: input '{spec.name}' expects shape {spec.display_shape()} (first axis = samples; "
            f"rank {rank - 1} for one sample), got {_fmt_shape(shape)}{problem}; {_shape_hint(spec, shape)}"
        )
    return single


def _check_dtype_kind(spec: InputSpec, dtype: np.dtype, where: str) -> None:
    """Reject dtype combinations that are never cast; value-dependent ones are checked per batch."""
    src, dst = np.dtype(dtype), spec.dtype
    if src == dst:
        return
    if src.kind not in "biuf":
        raise DataError(
            f"{where}: input '{spec.name}' expects {dst} but the data is {src}, which is not numeric; "
            f"save it as a {dst} array"
        )
    if dst.kind in "iub" and src.kind == "f":
        fix = "np.rint(x).astype(np." + dst.name + ")" if dst.kind != "b" else "x != 0"
        raise DataError(
            f"{where}: input '{spec.name}' expects {dst} but the data is {src}; float data is never cast to "
            f"{'integers' if dst.kind != 'b' else 'bool'} implicitly: convert it explicitly (e.g. {fix})"
        )
    if dst.kind not in "biuf":
        raise DataError(
            f"{where}: input '{spec.name}' has dtype {dst}, which mpcompile cannot feed from {src} data; "
            f"save the data as {dst}"
        )


def _convert(spec: InputSpec, arr: np.ndarray, where: str) -> np.ndarray:
    """Cast ``arr`` to the input's dtype, checking that no value changes; return a C-contiguous array."""
    src, dst = arr.dtype, spec.dtype
    if src != dst:
        _check_dtype_kind(spec, src, where)
        if arr.size == 0:
            out = arr.astype(dst)
        elif dst.kind == "f" and src.kind in "iu":
            out = arr.astype(dst)
            _check_exact_int_to_float(spec, arr, out, where)
        elif dst.kind in "iu" and src.kind in "iub":
            if src.kind != "b" and not np.can_cast(src, dst, "safe"):
                lo, hi, info = int(arr.min()), int(arr.max()), np.iinfo(dst)
                if lo < info.min or hi > info.max:
                    raise DataError(
                        f"{where}: input '{spec.name}' expects {dst} but the {src} data has values in [{lo}, {hi}], "
                        f"outside {dst}'s range [{info.min}, {info.max}]; rescale or clip the data"
                    )
            out = arr.astype(dst)
        elif dst.kind == "b" and src.kind in "iu":
            if not np.isin(arr, (0, 1)).all():
                raise DataError(
                    f"{where}: input '{spec.name}' expects bool but the {src} data has values other than 0 and 1; "
                    "convert it explicitly (e.g. x != 0)"
                )
            out = arr.astype(dst)
        else:  # float -> float, bool -> float
            with np.errstate(over="ignore"):
                out = arr.astype(dst)
    else:
        out = arr
    if dst.kind == "f" and out.size and not np.isfinite(out).all():
        cast = f" after casting {src} to {dst}" if src != dst else ""
        raise DataError(
            f"{where}: input '{spec.name}' has NaN or Inf values{cast}; remove or replace them "
            "(calibration ranges would be meaningless)"
        )
    return np.ascontiguousarray(out)


def _check_exact_int_to_float(spec: InputSpec, arr: np.ndarray, out: np.ndarray, where: str) -> None:
    exact_limit = 2 ** (np.finfo(out.dtype).nmant + 1)  # every integer up to this is exact
    if np.can_cast(arr.dtype, out.dtype, "safe"):
        return
    big = (arr > exact_limit) | (arr < -exact_limit)
    if not big.any():
        return
    src_vals, dst_vals = arr[big], out[big]
    if arr.dtype.itemsize <= 4:  # float64 holds every 32-bit integer exactly
        exact = bool(np.all(src_vals.astype(np.float64) == dst_vals.astype(np.float64)))
    else:
        exact = all(math.isfinite(f) and int(f) == i for f, i in zip(dst_vals.tolist(), src_vals.tolist()))
    if not exact:
        raise DataError(
            f"{where}: input '{spec.name}' expects {out.dtype} but the {arr.dtype} data has values "
            f"(up to {int(np.abs(src_vals.astype(np.float64)).max()):.0f} in magnitude) that {out.dtype} cannot "
            f"represent exactly; scale the data or convert it to {out.dtype} yourself"
        )


def _check_missing(inputs: Iterable[InputSpec], found: Iterable[str], where: str, fix: str) -> None:
    found = list(found)
    missing = [spec.name for spec in inputs if spec.name not in found]
    if missing:
        shown = ", ".join(f"'{k}'" for k in found) or "none"
        names = ", ".join(f"'{m}'" for m in missing)
        raise DataError(f"{where}: missing model input {names} (keys found: {shown}); {fix}")


def _require_single_input(inputs: tuple[InputSpec, ...], source: str, kind: str) -> None:
    if len(inputs) != 1:
        names = ", ".join(f"'{s.name}'" for s in inputs)
        raise DataError(
            f"{source}: {kind} feeds single-input models only, but the model has {len(inputs)} inputs ({names}); "
            "save the data as one .npz keyed by input name: np.savez(path, "
            + ", ".join(f"{s.name}=..." for s in inputs)
            + ")"
        )
