"""Datasets of arrays: an ``.npz`` archive, an ``.npy`` file, a directory of ``.npy``/``.npz`` files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpcompile.data.dataset import Dataset, _list_files, _stack_single
from mpcompile.data.members import _Member, _npy_member, _npz_members, _open_readers
from mpcompile.data.specs import (
    InputSpec,
    _check_array_shape,
    _check_dtype_kind,
    _check_missing,
    _check_positive,
    _convert,
    _require_single_input,
)
from mpcompile.errors import DataError

ARRAY_SUFFIXES = frozenset({".npy", ".npz"})


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
