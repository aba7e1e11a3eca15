"""Calibration and evaluation data: open a user's data source and feed it to a model in batches.

``open_dataset(spec, inputs)`` turns whatever the user points at into a :class:`Dataset`
that yields feed dicts ``{input name: array}`` whose first axis is the sample axis,
validated against the model's :class:`InputSpec` list and cast to each input's dtype.

Sources (``open_dataset`` dispatches on the spec)
--------------------------------------------------
``data.npz``
    The default format: one array per model input, keyed by input name, samples on the
    first axis (``np.savez("data.npz", images=x, labels=y)``). Keys that are not model
    inputs (``labels``, ...) are available through :meth:`Dataset.extra_arrays`.
``data.npy``
    One array for a single-input model, samples on the first axis.
``dir/`` of ``.npy`` / ``.npz`` files
    Files are found recursively and taken in sorted order of their relative path. A file
    holds either *one sample* (the sample axis is absent: rank = input rank - 1) or
    *k samples* (the sample axis is present: rank = input rank, k = its first dim). Within
    one ``.npz`` every input must use the same convention. ``.npy`` files need a
    single-input model. Non-input keys of ``.npz`` files are extra arrays (for a
    one-sample file they gain a sample axis) and must be present in every file.
``dir/`` of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``, ``.tif``)
    Found recursively, sorted, decoded one at a time with Pillow and preprocessed by an
    :class:`ImagePreprocess`. Single-input models with a rank-4 (NCHW or NHWC) input only.
    When every image lies in a sub-folder, the first path component is its class
    (torchvision ``ImageFolder`` convention): ``extra_arrays()["labels"]`` holds the index
    of that class in the sorted class names (:attr:`ImageFolderDataset.class_names`).
``"package.module:function"`` / ``"path/to/file.py:function"`` / a Python callable
    The function is called with no argument (once per pass over the data) and returns an
    iterable of feed dicts (a single dict is accepted as well). In each dict an array of
    the input's rank is a batch; an array of rank - 1 is one sample (a sample axis is
    added). Keys that are not model inputs are an error. The number of samples is unknown
    (``num_samples is None``) until the data has been iterated.

Any rank-(R-1) array of an ``.npz``/``.npy`` file is likewise read as one single sample.

Validation (every source)
-------------------------
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

Memory
------
Nothing is loaded eagerly; only headers are read when the dataset is opened.

* ``.npy`` files and *stored* (uncompressed, ``np.savez``) ``.npz`` members are
  memory-mapped: ``np.load(mmap_mode="r")`` does not map ``.npz`` members, so the member's
  data offset is computed from its zip local header and its ``.npy`` header and the member
  is mapped with ``np.memmap``. A batch costs one batch of memory; the pages are
  file-backed, so the OS can drop them.
* *compressed* members (``np.savez_compressed``) in C order are decompressed as a stream,
  one batch at a time, for each pass over the data: memory stays at one batch, and the
  price is decompressing the member again on every pass (calibration makes one pass).
* compressed members in Fortran order cannot be streamed by sample; such a member is
  decoded whole once per pass (the memory of that one array) and sliced.
* extra arrays (labels) are read whole, when asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import os
import re
import struct
import sys
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ArrayDirectoryDataset",
    "CallableDataset",
    "Dataset",
    "ImageFolderDataset",
    "ImagePreprocess",
    "InputSpec",
    "NpyDataset",
    "NpzDataset",
    "effective_batch_size",
    "open_dataset",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz"})

Dim = int | str | None


# --------------------------------------------------------------------------------------
# Input specs and shape formatting
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One model input, as the model declares it.

    ``shape`` holds ints for fixed dims and a name (``"batch"``) or ``None`` for dynamic
    dims; a non-positive int is treated as dynamic too. ``dtype`` is normalized to
    ``np.dtype``.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

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


# --------------------------------------------------------------------------------------
# Array members: .npy files and .npz members, read lazily
# --------------------------------------------------------------------------------------


@dataclass
class _Member:
    """One array stored in a file: a .npy file or a member of an .npz archive."""

    path: Path
    key: str  # input/extra name (for a .npy file: the file stem)
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int | None  # byte offset of the raw data in ``path`` when it can be memory-mapped
    zipinfo: zipfile.ZipInfo | None = None
    where: str = ""

    @property
    def count(self) -> int:
        return self.shape[0] if self.shape else 1


def _read_npy_header(fp: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:  # 2.0 and 3.0 share the 4-byte header length; 3.0 only allows utf-8 field names
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except (ValueError, OSError, EOFError, struct.error, SyntaxError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} is not a valid .npy array ({exc}); re-save it with numpy.save/numpy.savez") from exc
    if dtype.hasobject:
        raise DataError(
            f"{where} holds Python objects, which are not loaded (allow_pickle=False); "
            "save plain numeric arrays instead"
        )
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _npy_member(path: Path, where: str) -> _Member:
    try:
        with open(path, "rb") as fp:
            shape, fortran, dtype = _read_npy_header(fp, where)
            offset = fp.tell()
            size = os.fstat(fp.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{where} cannot be read ({exc}); check the path and its permissions") from exc
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes > size:
        raise DataError(
            f"{where} is truncated: its header declares {_fmt_shape(shape)} {dtype} ({nbytes} bytes) but only "
            f"{size - offset} bytes follow; re-create the file"
        )
    return _Member(path, path.stem, shape, dtype, fortran, offset, None, where)


def _npz_members(path: Path, where: str) -> dict[str, _Member]:
    """Read the .npy headers of every member of an .npz archive (no array data is read)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{where} is not a valid .npz archive ({exc}); re-create it with numpy.savez(path, input_name=array, ...)"
        ) from exc
    members: dict[str, _Member] = {}
    try:
        with zf, open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                mwhere = f"{where} (member '{info.filename}')"
                if info.flag_bits & 0x1:
                    raise DataError(f"{mwhere} is encrypted; save the data with numpy.savez without encryption")
                if info.compress_type == zipfile.ZIP_STORED:
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                    if len(local) != 30 or local[:4] != b"PK\x03\x04":
                        raise DataError(f"{mwhere} has a corrupt zip header; re-create the archive with numpy.savez")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    raw.seek(start)
                    shape, fortran, dtype = _read_npy_header(raw, mwhere)
                    offset = raw.tell()
                    nbytes = math.prod(shape) * dtype.itemsize
                    if offset + nbytes > size or offset - start + nbytes > info.file_size:
                        raise DataError(
                            f"{mwhere} is truncated: it declares {_fmt_shape(shape)} {dtype} but the archive holds "
                            "fewer bytes; re-create the file"
                        )
                else:
                    try:
                        with zf.open(info) as stream:
                            shape, fortran, dtype = _read_npy_header(stream, mwhere)
                    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
                        raise DataError(f"{mwhere} cannot be decompressed ({exc}); re-create the archive") from exc
                    offset = None
                members[key] = _Member(path, key, shape, dtype, fortran, offset, info, mwhere)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"{where} is a corrupt .npz archive ({exc}); re-create it with numpy.savez") from exc
    return members


class _MemberReader:
    """Reads rows ``[start, stop)`` of one member, in increasing order, during one pass."""

    def __init__(self, member: _Member, zf: zipfile.ZipFile | None) -> None:
        self.member = member
        self._zf = zf
        self._mm: np.ndarray | None = None
        self._whole: np.ndarray | None = None
        self._stream: Any = None
        self._pos = 0
        self._file: Any = None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._file is not None:
            self._file.close()
        self._stream = self._mm = self._whole = self._file = None

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        """C-order rows read with one positioned read: pages do not stay mapped (and resident) after use."""
        m = self.member
        if self._file is None:
            self._file = open(m.path, "rb")  # noqa: SIM115 - closed by close()
        row = math.prod(m.shape[1:]) * m.dtype.itemsize
        count = max(0, min(stop, m.shape[0]) - start)
        data = os.pread(self._file.fileno(), count * row, m.offset + start * row)
        if len(data) != count * row:
            raise DataError(f"{m.where} is truncated; re-create the file")
        return np.frombuffer(data, dtype=m.dtype).reshape((count,) + tuple(m.shape[1:])).copy()

    def read(self, start: int, stop: int) -> np.ndarray:
        m = self.member
        try:
            if not m.shape:  # a 0-d array: one sample, read whole
                return self._read_whole()
            if m.offset is not None:
                if math.prod(m.shape) == 0:
                    return np.empty((stop - start,) + m.shape[1:], m.dtype)
                if not m.fortran:
                    return self._read_rows(start, stop)
                if self._mm is None:
                    self._mm = np.memmap(m.path, dtype=m.dtype, mode="r", offset=m.offset, shape=m.shape, order="F")
                return np.array(self._mm[start:stop])
            if m.fortran:  # cannot be streamed by sample: decoded whole, once per pass
                return self._read_whole()[start:stop]
            return self._read_stream(start, stop)
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            raise DataError(f"{m.where} cannot be read ({exc}); the file may be corrupt, re-create it") from exc

    def _open_stream(self) -> Any:
        assert self._zf is not None and self.member.zipinfo is not None
        stream = self._zf.open(self.member.zipinfo)
        _read_npy_header(stream, self.member.where)
        return stream

    def _read_whole(self) -> np.ndarray:
        if self._whole is None:
            m = self.member
            if m.offset is not None:
                self._whole = (
                    np.array(
                        np.memmap(
                            m.path,
                            dtype=m.dtype,
                            mode="r",
                            offset=m.offset,
                            shape=m.shape,
                            order="F" if m.fortran else "C",
                        )
                    )
                    if math.prod(m.shape)
                    else np.empty(m.shape, m.dtype)
                )
            else:
                with self._open_stream() as stream:
                    nbytes = math.prod(m.shape) * m.dtype.itemsize
                    data = stream.read(nbytes)
                    if len(data) != nbytes:
                        raise DataError(f"{m.where} is truncated; re-create the archive")
                    self._whole = np.frombuffer(data, m.dtype).reshape(m.shape, order="F" if m.fortran else "C")
        return self._whole

    def _read_stream(self, start: int, stop: int) -> np.ndarray:
        m = self.member
        if self._stream is None:
            self._stream = self._open_stream()
            self._pos = 0
        if start != self._pos:  # never happens in a pass; restart to stay correct
            self._stream.close()
            self._stream = self._open_stream()
            self._pos = 0
            row = math.prod(m.shape[1:]) * m.dtype.itemsize
            skip = start * row
            while skip:
                chunk = self._stream.read(min(skip, 1 << 24))
                if not chunk:
                    raise DataError(f"{m.where} is truncated; re-create the archive")
                skip -= len(chunk)
        row_bytes = math.prod(m.shape[1:]) * m.dtype.itemsize
        want = (stop - start) * row_bytes
        data = self._stream.read(want)
        if len(data) != want:
            raise DataError(
                f"{m.where} is truncated: expected {want} more bytes, got {len(data)}; re-create the archive"
            )
        self._pos = stop
        return np.frombuffer(data, m.dtype).reshape((stop - start,) + m.shape[1:])


class _Readers:
    """The readers of one pass over one file, with the zip archive they share."""

    def __init__(self, path: Path, members: Iterable[_Member], is_zip: bool) -> None:
        self._zf = zipfile.ZipFile(path) if is_zip else None
        self.by_key = {m.key: _MemberReader(m, self._zf) for m in members}

    def close(self) -> None:
        for reader in self.by_key.values():
            reader.close()
        if self._zf is not None:
            self._zf.close()

    def __enter__(self) -> _Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_readers(path: Path, members: Iterable[_Member], is_zip: bool, where: str) -> _Readers:
    try:
        return _Readers(path, members, is_zip)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{where} cannot be opened ({exc}); check that the file still exists and is intact") from exc


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


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
        cast to each input's dtype and C-contiguous. With a fixed batch dim k > 1 the final
        partial batch is dropped with a warning.
        """
        size = self.effective_batch_size(batch_size)
        if limit is not None:
            limit = _check_positive("sample limit", limit)
        static = _static_batch(self.inputs)
        return self._rebatch(size, limit, drop_partial=static is not None and static > 1)

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


class _MemberDataset(Dataset):
    """A dataset read from one file of array members (.npz or .npy)."""

    def __init__(self, path: Path, source: str, inputs: Iterable[InputSpec], members: dict[str, _Member], is_zip: bool):
        super().__init__(source, inputs)
        self.path = path
        self._members = members
        self._is_zip = is_zip
        if not members or all(m.count == 0 for m in members.values()):
            raise DataError(
                f"{source} contains no samples; expected one array per model input "
                f"({', '.join(self.input_names)}) with the samples on the first axis"
            )
        self._single: dict[str, bool] = {}
        counts: dict[str, int] = {}
        for spec in self.inputs:
            member = members[spec.name]
            single = _check_array_shape(spec, member.shape, source)
            _check_dtype_kind(spec, member.dtype, source)
            self._single[spec.name] = single
            counts[spec.name] = 1 if single else member.count
        if len(set(counts.values())) > 1:
            desc = ", ".join(f"'{k}': {n}" for k, n in counts.items())
            raise DataError(
                f"{source}: the inputs have different numbers of samples ({desc}); every input array needs the "
                "same first dim"
            )
        self.num_samples = next(iter(counts.values()))
        if self.num_samples == 0:
            raise DataError(f"{source} contains no samples (its arrays have 0 rows); provide at least one sample")

    @property
    def extra_names(self) -> tuple[str, ...]:
        return tuple(k for k in self._members if k not in self.input_names)

    def _chunks(self, chunk_size: int, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        total = self.num_samples if limit is None else min(limit, self.num_samples)
        members = [self._members[name] for name in self.input_names]
        with _open_readers(self.path, members, self._is_zip, self.source) as readers:
            for start in range(0, total, chunk_size):
                stop = min(start + chunk_size, total)
                chunk = {}
                for spec in self.inputs:
                    reader = readers.by_key[spec.name]
                    if self._single[spec.name]:  # one sample without a sample axis
                        arr = reader.read(0, reader.member.count)[np.newaxis]
                    else:
                        arr = reader.read(start, stop)
                    chunk[spec.name] = _convert(spec, arr, f"{self.source} (samples {start}..{stop - 1})")
                yield chunk

    def extra_arrays(self, limit: int | None = None) -> dict[str, np.ndarray]:
        names = self.extra_names
        if not names:
            return {}
        if limit is not None:
            limit = _check_positive("sample limit", limit)
        out = {}
        with _open_readers(self.path, [self._members[k] for k in names], self._is_zip, self.source) as readers:
            for k in names:
                reader = readers.by_key[k]
                member = reader.member
                if not member.shape:
                    out[k] = np.array(reader.read(0, 1))
                    continue
                stop = member.count if limit is None else min(limit, member.count)
                out[k] = np.array(reader.read(0, stop))
        return out


class NpzDataset(_MemberDataset):
    """An ``.npz`` archive keyed by input name; non-input keys are extra arrays."""

    def __init__(self, path: str | os.PathLike, inputs: Iterable[InputSpec]) -> None:
        path = Path(path)
        source = f"npz file '{path}'"
        members = _npz_members(path, source)
        inputs = tuple(inputs)
        if members:
            _check_missing(
                inputs,
                members,
                source,
                "save one array per model input under the input's name: np.savez(path, "
                + ", ".join(f"{s.name}=..." for s in inputs)
                + ")",
            )
        super().__init__(path, source, inputs, members, is_zip=True)


class NpyDataset(_MemberDataset):
    """One ``.npy`` array feeding a single-input model."""

    def __init__(self, path: str | os.PathLike, inputs: Iterable[InputSpec]) -> None:
        path = Path(path)
        source = f"npy file '{path}'"
        inputs = tuple(inputs)
        _require_single_input(inputs, source, "a .npy file")
        member = _npy_member(path, source)
        member.key = inputs[0].name
        super().__init__(path, source, inputs, {member.key: member}, is_zip=False)


def _require_single_input(inputs: tuple[InputSpec, ...], source: str, kind: str) -> None:
    if len(inputs) != 1:
        names = ", ".join(f"'{s.name}'" for s in inputs)
        raise DataError(
            f"{source}: {kind} feeds single-input models only, but the model has {len(inputs)} inputs ({names}); "
            "save the data as one .npz keyed by input name: np.savez(path, "
            + ", ".join(f"{s.name}=..." for s in inputs)
            + ")"
        )


@dataclass
class _ArrayFile:
    path: Path
    where: str
    members: dict[str, _Member]  # keyed by input/extra name
    is_zip: bool
    single: bool = False
    count: int = 0
    extra: tuple[str, ...] = field(default=())


class ArrayDirectoryDataset(Dataset):
    """A directory of ``.npy``/``.npz`` files, each one sample or a small batch, in sorted order."""

    def __init__(self, root: str | os.PathLike, inputs: Iterable[InputSpec], files: list[Path] | None = None) -> None:
        root = Path(root)
        super().__init__(f"directory '{root}'", inputs)
        self.root = root
        if files is None:
            files = _list_files(root, ARRAY_SUFFIXES)
        if not files:
            raise DataError(f"{self.source} contains no samples: no .npy or .npz files found in it")
        self.files: list[_ArrayFile] = []
        total = 0
        for path in files:
            entry = self._index(path)
            self.files.append(entry)
            total += entry.count
        if total == 0:
            raise DataError(f"{self.source} contains no samples: all its arrays have 0 rows")
        self.num_samples = total

    def _index(self, path: Path) -> _ArrayFile:
        rel = path.relative_to(self.root).as_posix()
        where = f"{self.source} (file '{rel}')"
        if path.suffix.lower() == ".npy":
            _require_single_input(self.inputs, where, "a .npy file")
            member = _npy_member(path, where)
            member.key = self.inputs[0].name
            entry = _ArrayFile(path, where, {member.key: member}, is_zip=False)
        else:
            members = _npz_members(path, where)
            if not members:
                raise DataError(f"{where} contains no samples: it holds no arrays; save one array per model input")
            _check_missing(self.inputs, members, where, "save every model input in each file under its name")
            entry = _ArrayFile(path, where, members, is_zip=True)
        singles = {}
        for spec in self.inputs:
            member = entry.members[spec.name]
            singles[spec.name] = _check_array_shape(spec, member.shape, where)
            _check_dtype_kind(spec, member.dtype, where)
        if len(set(singles.values())) > 1:
            with_axis = [k for k, s in singles.items() if not s]
            without = [k for k, s in singles.items() if s]
            raise DataError(
                f"{where}: inputs {with_axis} have a sample axis but {without} do not; in one file either every "
                "array is one sample (no sample axis) or every array has the same leading sample axis"
            )
        entry.single = next(iter(singles.values()))
        counts = {k: (1 if entry.single else entry.members[k].count) for k in self.input_names}
        if len(set(counts.values())) > 1:
            desc = ", ".join(f"'{k}': {n}" for k, n in counts.items())
            raise DataError(
                f"{where}: the inputs have different numbers of samples ({desc}); give them the same first dim"
            )
        entry.count = next(iter(counts.values()))
        entry.extra = tuple(k for k in entry.members if k not in self.input_names)
        return entry

    @property
    def extra_names(self) -> tuple[str, ...]:
        return self.files[0].extra if self.files else ()

    def _chunks(self, chunk_size: int, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        seen = 0
        for entry in self.files:
            if limit is not None and seen >= limit:
                return
            if entry.count == 0:
                continue
            with _open_readers(
                entry.path, [entry.members[k] for k in self.input_names], entry.is_zip, entry.where
            ) as r:
                chunk = {}
                for spec in self.inputs:
                    reader = r.by_key[spec.name]
                    arr = reader.read(0, reader.member.count) if reader.member.shape else reader.read(0, 1)
                    chunk[spec.name] = _convert(spec, _stack_single(arr, entry.single), entry.where)
            seen += entry.count
            yield chunk

    def extra_arrays(self, limit: int | None = None) -> dict[str, np.ndarray]:
        names = self.extra_names
        if not names:
            return {}
        if limit is not None:
            limit = _check_positive("sample limit", limit)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        seen = 0
        for entry in self.files:
            if limit is not None and seen >= limit:
                break
            absent = [k for k in names if k not in entry.members]
            if absent:
                raise DataError(
                    f"{entry.where}: extra array '{absent[0]}' is in '{self.files[0].path.name}' but missing here; "
                    "save the same keys in every file"
                )
            with _open_readers(entry.path, [entry.members[k] for k in names], entry.is_zip, entry.where) as r:
                for k in names:
                    reader = r.by_key[k]
                    arr = reader.read(0, reader.member.count) if reader.member.shape else reader.read(0, 1)
                    parts[k].append(np.array(_stack_single(arr, entry.single)))
            seen += entry.count
        out = {}
        for k, arrays in parts.items():
            try:
                joined = np.concatenate(arrays)
            except ValueError as exc:
                raise DataError(
                    f"{self.source}: extra array '{k}' has different shapes in different files; give it one shape"
                ) from exc
            out[k] = joined if limit is None else joined[:limit]
        return out


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

_SizeSpec = int | tuple[int, int] | None


def _parse_size(key: str, value: str) -> int | tuple[int, int]:
    parts = re.split(r"[x:]", value.strip().lower())
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or any(n < 1 for n in nums):
        raise DataError(
            f"preprocess option {key}={value!r} is not a size; use one positive integer (e.g. {key}=224) "
            f"or height x width (e.g. {key}=224x224)"
        )
    return nums[0] if len(nums) == 1 else (nums[0], nums[1])


def _parse_floats(key: str, value: str) -> tuple[float, ...]:
    try:
        nums = tuple(_parse_float(key, v) for v in value.split(":"))
    except DataError:
        raise DataError(
            f"preprocess option {key}={value!r} is not a list of numbers; separate channels with ':' "
            f"(e.g. {key}=0.485:0.456:0.406)"
        ) from None
    return nums


def _parse_float(key: str, value: str) -> float:
    value = value.strip()
    try:
        if "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise DataError(f"preprocess option {key}={value!r} is not a number (e.g. {key}=0.5 or {key}=1/255)") from None


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise DataError(f"preprocess option {key}={value!r} is not a boolean; use {key}=true or {key}=false")


@dataclass(frozen=True)
class ImagePreprocess:
    """How images become model input.

    Steps: decode (RGB, or grayscale), ``resize`` (an int resizes the shorter side keeping
    the aspect ratio, like torchvision's ``Resize(int)``; ``(h, w)`` resizes exactly;
    bilinear), ``center_crop`` (int or ``(h, w)``), ``channel_order``, then by ``dtype``:
    ``float32`` -> ``(pixel * scale - mean) / std``; ``uint8`` -> raw pixels 0..255;
    ``int8`` -> pixel - 128 (TFLite-style int8 input). ``mean``/``std`` have 1 value or one
    per channel. ``layout`` places the channel axis.

    ``None`` means "from the model": ``layout`` from where the model's channel dim (1 or 3)
    is, ``dtype`` from the model input dtype (float -> float32, uint8, int8), ``grayscale``
    when the model has 1 channel.
    """

    resize: _SizeSpec = None
    center_crop: _SizeSpec = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"
    layout: str | None = None
    dtype: str | None = None
    scale: float = 1 / 255
    grayscale: bool | None = None

    _KEYS = {
        "resize": "resize",
        "crop": "center_crop",
        "center_crop": "center_crop",
        "mean": "mean",
        "std": "std",
        "order": "channel_order",
        "channel_order": "channel_order",
        "layout": "layout",
        "dtype": "dtype",
        "scale": "scale",
        "grayscale": "grayscale",
        "gray": "grayscale",
    }

    def __post_init__(self) -> None:
        for name in ("resize", "center_crop"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                value = tuple(int(v) for v in value)
                ok = len(value) == 2 and all(v > 0 for v in value)
            else:
                ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0
                value = int(value) if ok else value
            if not ok:
                raise DataError(f"preprocess {name}={value!r} is not a size; use a positive int or (height, width)")
            object.__setattr__(self, name, value)
        for name in ("mean", "std"):
            value = getattr(self, name)
            value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if len(value) not in (1, 3):
                raise DataError(f"preprocess {name} has {len(value)} values; give 1 value or one per channel")
            object.__setattr__(self, name, value)
        if any(s == 0 for s in self.std):
            raise DataError(f"preprocess std={':'.join(map(str, self.std))} contains 0; std values must be non-zero")
        order = str(self.channel_order).upper()
        if order not in ("RGB", "BGR"):
            raise DataError(f"preprocess channel order {self.channel_order!r} is not supported; use RGB or BGR")
        object.__setattr__(self, "channel_order", order)
        if self.layout is not None:
            layout = str(self.layout).upper()
            if layout not in ("NCHW", "NHWC"):
                raise DataError(f"preprocess layout {self.layout!r} is not supported; use NCHW or NHWC")
            object.__setattr__(self, "layout", layout)
        if self.dtype is not None:
            dtype = str(np.dtype(self.dtype)) if not isinstance(self.dtype, str) else self.dtype.lower()
            if dtype not in ("float32", "uint8", "int8"):
                raise DataError(f"preprocess dtype {self.dtype!r} is not supported; use float32, uint8 or int8")
            object.__setattr__(self, "dtype", dtype)
            if dtype != "float32" and (self.mean != (0.0,) or self.std != (1.0,) or self.scale != 1 / 255):
                raise DataError(
                    f"preprocess dtype={dtype} feeds raw pixels, so mean/std/scale do not apply; "
                    "drop them or use dtype=float32"
                )
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def parse(cls, text: str) -> ImagePreprocess:
        """Parse ``"resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=NCHW,order=RGB"``.

        Keys: resize, crop (center_crop), mean, std, order (channel_order), layout, dtype,
        scale (a number or a fraction such as 1/255), grayscale (gray). Sizes are ``N`` or
        ``HxW``; per-channel values are separated by ``:``.
        """
        kwargs: dict[str, Any] = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if key not in cls._KEYS:
                valid = ", ".join(sorted(cls._KEYS))
                raise DataError(f"unknown preprocess option '{key}' in {text!r}; valid options: {valid}")
            if not sep and key not in ("grayscale", "gray"):
                raise DataError(f"preprocess option '{key}' in {text!r} has no value; write {key}=VALUE")
            name = cls._KEYS[key]
            value = value.strip()
            if name in ("resize", "center_crop"):
                kwargs[name] = _parse_size(key, value)
            elif name in ("mean", "std"):
                kwargs[name] = _parse_floats(key, value)
            elif name == "scale":
                kwargs[name] = _parse_float(key, value)
            elif name == "grayscale":
                kwargs[name] = _parse_bool(key, value)
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every preprocessed image, if the options fix it."""
        if self.center_crop is not None:
            return _hw(self.center_crop)
        if isinstance(self.resize, tuple):
            return self.resize
        return None


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def _list_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    suffixes = frozenset(suffixes)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


class ImageFolderDataset(Dataset):
    """A folder of images (recursive, sorted) for a single-input image model."""

    def __init__(
        self,
        root: str | os.PathLike,
        inputs: Iterable[InputSpec],
        preprocess: ImagePreprocess | None = None,
        files: list[Path] | None = None,
    ) -> None:
        root = Path(root)
        super().__init__(f"image folder '{root}'", inputs)
        self.root = root
        _require_single_input(self.inputs, self.source, "an image folder")
        spec = self.spec = self.inputs[0]
        if spec.rank != 4:
            raise DataError(
                f"{self.source}: image folders feed rank-4 image inputs (NCHW or NHWC), but input '{spec.name}' has "
                f"shape {spec.display_shape()}; save the data as .npz instead"
            )
        pre = preprocess or ImagePreprocess()
        layout = pre.layout or self._infer_layout(spec)
        c_axis = 1 if layout == "NCHW" else 3
        model_c = spec.shape[c_axis]
        grayscale = pre.grayscale if pre.grayscale is not None else (_is_static(model_c) and model_c == 1)
        channels = 1 if grayscale else 3
        if _is_static(model_c) and model_c != channels:
            other = 3 if layout == "NCHW" else 1
            hint = (
                f"set layout={'NHWC' if layout == 'NCHW' else 'NCHW'}"
                if _is_static(spec.shape[other]) and spec.shape[other] == channels
                else ("set grayscale=true" if model_c == 1 else "set grayscale=false" if model_c == 3 else "")
            )
            raise DataError(
                f"{self.source}: input '{spec.name}' has shape {spec.display_shape()}, so with layout {layout} it "
                f"takes {model_c} channel(s), but the images are decoded with {channels}; "
                + (hint or "this model does not take RGB or grayscale images")
            )
        mean_std = [v for v in (pre.mean, pre.std) if len(v) not in (1, channels)]
        if mean_std:
            raise DataError(
                f"{self.source}: preprocess mean/std have {len(mean_std[0])} values but the images have {channels} "
                "channel(s); give 1 value or one per channel"
            )
        if pre.dtype is not None:
            dtype = pre.dtype
        elif spec.dtype == np.uint8 or spec.dtype == np.int8:
            dtype = spec.dtype.name
        else:
            dtype = "float32"
        self.preprocess = pre
        self.layout = layout
        self.grayscale = grayscale
        self.dtype = dtype
        h_axis = 2 if layout == "NCHW" else 1
        self._model_hw = (spec.shape[h_axis], spec.shape[h_axis + 1])
        size = pre.output_size()
        if size is not None and not _dims_match(self._model_hw, size):
            raise DataError(
                f"{self.source}: preprocessing makes {size[0]}x{size[1]} images but input '{spec.name}' has shape "
                f"{spec.display_shape()}; {self._size_hint()}"
            )
        if files is None:
            files = _list_files(root, IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"{self.source} contains no samples: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in it"
            )
        self.files = files
        self.num_samples = len(files)
        self.load(files[0])  # decode one image now, to fail before a long run starts
        rel = [p.relative_to(root).parts for p in files]
        if all(len(parts) >= 2 for parts in rel):
            self.class_names: tuple[str, ...] = tuple(sorted({parts[0] for parts in rel}))
            index = {name: i for i, name in enumerate(self.class_names)}
            self._labels: np.ndarray | None = np.array([index[parts[0]] for parts in rel], dtype=np.int64)
        else:
            self.class_names = ()
            self._labels = None

    @staticmethod
    def _infer_layout(spec: InputSpec) -> str:
        c_first, c_last = spec.shape[1], spec.shape[3]
        first = _is_static(c_first) and c_first in (1, 3)
        last = _is_static(c_last) and c_last in (1, 3)
        return "NHWC" if last and not first else "NCHW"

    def _size_hint(self) -> str:
        h, w = self._model_hw
        if _is_static(h) and _is_static(w):
            if h == w:
                return f"add resize={round(h * 256 / 224)},crop={h} (or resize={h}x{w}) to the preprocess options"
            return f"add resize={h}x{w} to the preprocess options"
        return "add resize/crop options to the preprocess options to match the model"

    @property
    def extra_names(self) -> tuple[str, ...]:
        return ("labels",) if self._labels is not None else ()

    def extra_arrays(self, limit: int | None = None) -> dict[str, np.ndarray]:
        if self._labels is None:
            return {}
        if limit is not None:
            limit = _check_positive("sample limit", limit)
        return {"labels": self._labels[:limit].copy()}

    def load(self, path: Path) -> np.ndarray:
        """Decode and preprocess one image: one sample, without the sample axis."""
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as exc:  # pragma: no cover - pillow is a dependency of the image path only
            raise DataError(
                f"{self.source}: reading images needs Pillow, which is not installed; pip install pillow"
            ) from exc
        pre = self.preprocess
        where = f"{self.source} (image '{path.relative_to(self.root).as_posix()}')"
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                if pre.resize is not None:
                    if isinstance(pre.resize, int):
                        w, h = img.size
                        short, long_ = (w, h) if w <= h else (h, w)
                        new_long = int(pre.resize * long_ / short)
                        new = (pre.resize, new_long) if w <= h else (new_long, pre.resize)
                    else:
                        new = (pre.resize[1], pre.resize[0])
                    if new != img.size:
                        img = img.resize(new, Image.Resampling.BILINEAR)
                if pre.center_crop is not None:
                    ch, cw = _hw(pre.center_crop)
                    w, h = img.size
                    if ch > h or cw > w:
                        raise DataError(
                            f"{where} is {h}x{w} (HxW), smaller than the {ch}x{cw} center crop; "
                            "add a resize option at least as large as the crop"
                        )
                    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
                    img = img.crop((left, top, left + cw, top + ch))
                arr = np.asarray(img)
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{where} cannot be decoded ({exc}); remove or replace the file") from exc
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        if pre.channel_order == "BGR" and arr.shape[2] == 3:
            arr = arr[:, :, ::-1]
        if not _dims_match(self._model_hw, arr.shape[:2]):
            raise DataError(
                f"{where} is {arr.shape[0]}x{arr.shape[1]} (HxW) after preprocessing but input '{self.spec.name}' "
                f"has shape {self.spec.display_shape()}; {self._size_hint()}"
            )
        if self.dtype == "float32":
            out = arr.astype(np.float32) * np.float32(pre.scale)
            out = (out - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        elif self.dtype == "int8":
            out = (arr.astype(np.int16) - 128).astype(np.int8)
        else:
            out = arr.astype(np.uint8, copy=False)
        if self.layout == "NCHW":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out)

    def _chunks(self, chunk_size: int, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        files = self.files if limit is None else self.files[:limit]
        for path in files:
            arr = self.load(path)[np.newaxis]
            where = f"{self.source} (image '{path.relative_to(self.root).as_posix()}')"
            yield {self.spec.name: _convert(self.spec, arr, where)}


# --------------------------------------------------------------------------------------
# Callables
# --------------------------------------------------------------------------------------

_IDENT = r"[A-Za-z_]\w*"
_CALLABLE_SPEC = re.compile(rf"^(?P<target>.+):(?P<attr>{_IDENT}(?:\.{_IDENT})*)$")


def _is_callable_spec(spec: str) -> bool:
    if os.path.exists(spec):
        return False
    match = _CALLABLE_SPEC.match(spec)
    if not match:
        return False
    target = match["target"]
    return target.endswith(".py") or re.fullmatch(rf"{_IDENT}(?:\.{_IDENT})*", target) is not None


def _load_callable(spec: str) -> Callable[[], Any]:
    match = _CALLABLE_SPEC.match(spec)
    assert match is not None
    target, attr = match["target"], match["attr"]
    where = f"data function '{spec}'"
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise DataError(f"{where}: file '{path}' not found; give an existing path/to/file.py:function")
        stem = re.sub(r"\W", "_", path.stem)
        name = f"_mpcompile_data_{stem}_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise DataError(f"{where}: '{path}' cannot be loaded as a Python module; check that it is a .py file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise DataError(f"{where}: importing '{path}' raised {type(exc).__name__}: {exc}; fix the file") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise DataError(
                f"{where}: cannot import module '{target}' ({exc}); check the module name, or give a file as "
                "path/to/file.py:function (if you meant a data file, it does not exist)"
            ) from exc
        except Exception as exc:
            raise DataError(f"{where}: importing module '{target}' raised {type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.remove(os.getcwd())
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(f"{where}: '{target}' has no attribute '{attr}'; check the function name after ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(f"{where}: '{attr}' is a {type(obj).__name__}, not a function; name a function after ':'")
    return obj


class CallableDataset(Dataset):
    """Feed dicts produced by a Python function called with no arguments (once per pass)."""

    def __init__(self, fn: Callable[[], Any], inputs: Iterable[InputSpec], source: str | None = None) -> None:
        if source is None:
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            module = getattr(fn, "__module__", None)
            source = f"data function '{module}:{name}'" if module else f"data function '{name}'"
        super().__init__(source, inputs)
        self.fn = fn

    def _chunks(self, chunk_size: int, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
        try:
            result = self.fn()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.source} raised {type(exc).__name__}: {exc}; fix the function") from exc
        if isinstance(result, Mapping):
            result = [result]
        try:
            iterator = iter(result)
        except TypeError:
            raise DataError(
                f"{self.source} returned {type(result).__name__}; it must return (or yield) feed dicts "
                "{input name: array}"
            ) from None
        seen = 0
        for index in itertools.count():
            try:
                item = next(iterator)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as exc:
                raise DataError(
                    f"{self.source} raised {type(exc).__name__} while producing item {index}: {exc}; fix the function"
                ) from exc
            chunk = self._validate(item, index)
            seen += len(next(iter(chunk.values())))
            yield chunk
            if limit is not None and seen >= limit:
                return

    def _validate(self, item: Any, index: int) -> dict[str, np.ndarray]:
        where = f"{self.source} (item {index})"
        if not isinstance(item, Mapping):
            raise DataError(
                f"{where} is a {type(item).__name__}; each item must be a dict {{input name: array}} for inputs "
                f"{', '.join(self.input_names)}"
            )
        keys = [str(k) for k in item]
        _check_missing(self.inputs, keys, where, "yield a dict with one array per model input")
        unknown = [k for k in keys if k not in self.input_names]
        if unknown:
            raise DataError(
                f"{where}: keys {', '.join(repr(k) for k in unknown)} are not model inputs (inputs: "
                f"{', '.join(self.input_names)}); yield only model inputs (labels belong in an .npz file)"
            )
        chunk: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            value = item[spec.name]
            try:
                arr = np.asarray(value)
            except Exception as exc:
                raise DataError(
                    f"{where}: input '{spec.name}' is a {type(value).__name__} that does not convert to an array "
                    f"({exc}); yield numpy arrays"
                ) from exc
            single = _check_array_shape(spec, arr.shape, where)
            chunk[spec.name] = _convert(spec, _stack_single(arr, single), where)
        counts = {k: len(v) for k, v in chunk.items()}
        if len(set(counts.values())) > 1:
            desc = ", ".join(f"'{k}': {n}" for k, n in counts.items())
            raise DataError(
                f"{where}: the inputs have different numbers of samples ({desc}); give them the same first dim"
            )
        return chunk


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------


def open_dataset(
    spec: str | os.PathLike | Callable[[], Any],
    inputs: Iterable[InputSpec],
    *,
    preprocess: ImagePreprocess | str | None = None,
) -> Dataset:
    """Open calibration or evaluation data for a model with ``inputs``.

    ``spec`` is an ``.npz`` or ``.npy`` file, a directory of ``.npy``/``.npz`` files or
    of images, ``"module:function"`` / ``"file.py:function"``, or a callable (see the
    module docstring). ``preprocess`` (an :class:`ImagePreprocess` or its string form)
    applies to image folders only. Only headers are read here; a :class:`DataError`
    names any mismatch with the model found at this point.
    """
    inputs = tuple(inputs)
    if isinstance(preprocess, str):
        preprocess = ImagePreprocess.parse(preprocess)
    if callable(spec) and not isinstance(spec, (str, os.PathLike)):
        _no_preprocess(preprocess, "a Python callable")
        return CallableDataset(spec, inputs)
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if isinstance(spec, str) and _is_callable_spec(text):
        _no_preprocess(preprocess, f"data function '{text}'")
        return CallableDataset(_load_callable(text), inputs, source=f"data function '{text}'")
    path = Path(text)
    expected = "a .npz or .npy file, a directory of .npy/.npz files or images, or 'module:function'"
    if not path.exists():
        raise DataError(f"data '{path}' not found; expected {expected}")
    if path.is_dir():
        arrays = _list_files(path, ARRAY_SUFFIXES)
        images = _list_files(path, IMAGE_SUFFIXES)
        if arrays and images:
            raise DataError(
                f"directory '{path}' mixes array files ({arrays[0].name}, ...) and images ({images[0].name}, ...); "
                "keep one kind of data per directory"
            )
        if images:
            return ImageFolderDataset(path, inputs, preprocess, files=images)
        _no_preprocess(preprocess, f"directory '{path}' (it holds no images)")
        if arrays:
            return ArrayDirectoryDataset(path, inputs, files=arrays)
        raise DataError(
            f"directory '{path}' contains no samples: no .npy/.npz files and no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) found in it"
        )
    suffix = path.suffix.lower()
    if suffix == ".npz":
        _no_preprocess(preprocess, f"npz file '{path}'")
        return NpzDataset(path, inputs)
    if suffix == ".npy":
        _no_preprocess(preprocess, f"npy file '{path}'")
        return NpyDataset(path, inputs)
    if suffix in IMAGE_SUFFIXES:
        return ImageFolderDataset(path.parent, inputs, preprocess, files=[path])
    raise DataError(f"data '{path}' has an unsupported format ('{suffix or 'no suffix'}'); expected {expected}")


def _no_preprocess(preprocess: ImagePreprocess | None, what: str) -> None:
    if preprocess is not None:
        raise DataError(f"image preprocess options apply to image folders only, not to {what}; drop them")
