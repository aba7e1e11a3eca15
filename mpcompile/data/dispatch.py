"""``open_dataset``: which :class:`~mpcompile.data.dataset.Dataset` a data spec opens."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mpcompile.data.arrays import ARRAY_SUFFIXES, ArrayDirectoryDataset, NpyDataset, NpzDataset
from mpcompile.data.callables import CallableDataset, _is_callable_spec, _load_callable
from mpcompile.data.dataset import Dataset, _list_files
from mpcompile.data.images import IMAGE_SUFFIXES, ImageFolderDataset, ImagePreprocess
from mpcompile.data.specs import InputSpec
from mpcompile.errors import DataError


def open_dataset(
    spec: str | os.PathLike | Callable[[], Any],
    inputs: Iterable[InputSpec],
    *,
    preprocess: ImagePreprocess | str | None = None,
) -> Dataset:
    """Open calibration or evaluation data for a model with ``inputs``.

    ``spec`` is an ``.npz`` or ``.npy`` file, a directory of ``.npy``/``.npz`` files or
    of images, ``"module:function"`` / ``"file.py:function"``, a callable, or feed dicts
    ``{input name: array}`` (one, or a list: read as a callable's would be; see the
    package docstring). ``preprocess`` (an :class:`ImagePreprocess` or its string form)
    applies to image folders only. Only headers are read here; a :class:`DataError`
    names any mismatch with the model found at this point.
    """
    inputs = tuple(inputs)
    if isinstance(preprocess, str):
        preprocess = ImagePreprocess.parse(preprocess)
    if isinstance(spec, Mapping) or (isinstance(spec, (list, tuple)) and spec and all(isinstance(f, Mapping) for f in spec)):
        _no_preprocess(preprocess, "feed dicts")
        feeds = [spec] if isinstance(spec, Mapping) else list(spec)
        return CallableDataset(lambda: feeds, inputs, source="the feed dict(s) passed in")
    if callable(spec) and not isinstance(spec, (str, os.PathLike)):
        _no_preprocess(preprocess, "a Python callable")
        return CallableDataset(spec, inputs)
    if not isinstance(spec, (str, bytes, os.PathLike)):
        raise DataError(f"data of type {type(spec).__name__} is not a data source: pass a path to an .npz or .npy "
                        f"file or a directory, 'module:function', a callable, or feed dicts {{input name: array}}")
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
