"""Data from Python: :class:`CallableDataset` and the loading of ``module:function`` / ``file.py:function``."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.data.dataset import Dataset, _stack_single
from mpcompile.data.specs import InputSpec, _check_array_shape, _check_missing, _convert
from mpcompile.errors import DataError

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
