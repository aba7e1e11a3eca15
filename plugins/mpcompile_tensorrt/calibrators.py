"""INT8 calibrators for TensorRT 10's implicit quantization.

TensorRT 10 calibrates through Python subclasses of ``trt.IInt8EntropyCalibrator2`` or
``trt.IInt8MinMaxCalibrator`` (deprecated since 10.1, removed in 11). The classes are made
here by factories that take the ``tensorrt`` module, so this file imports without TensorRT
and the calibrators can be exercised against a stand-in module.

Two kinds:

* ``plan_calibrator``: ``read_calibration_cache`` returns a cache written from the plan's
  scales (``cache.write_cache``), so TensorRT skips calibration and uses exactly the plan's
  numbers. ``get_batch`` never hands out data; if TensorRT rejected the cache (a header for
  another TensorRT version) the build fails instead of calibrating on nothing.
* ``dataset_calibrator``: TensorRT calibrates its own scales (entropy or min/max) on
  batches from an mpcompile ``Dataset`` (``Dataset.batches``), copied to device buffers
  (torch, cupy or cuda-python). Calibration inputs are float32; with dynamic shapes the
  builder also needs a calibration profile with exactly the batch shape, so partial batches
  (the last one) are skipped.

TensorRT's bindings catch exceptions raised inside these callbacks and only print them, so
the calibrators record the first error (``error``) for the builder to raise afterwards.
Every subclass calls its base ``__init__``: a pybind11 trampoline that is not initialized
crashes the builder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from mpcompile.backends.api import BackendError

_BASES = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}


def calibrator_base(trt: ModuleType, algorithm: str) -> type:
    if algorithm not in _BASES:
        raise BackendError(f"unknown TensorRT calibrator {algorithm!r}; use 'entropy' or 'minmax'")
    base = getattr(trt, _BASES[algorithm], None)
    if base is None:
        raise BackendError(
            f"TensorRT {getattr(trt, '__version__', '?')} has no {_BASES[algorithm]}: implicit INT8 calibration was "
            f"removed in TensorRT 11; use quantization='explicit'"
        )
    return base


def _bytes(cache: Any) -> bytes:
    return cache.tobytes() if hasattr(cache, "tobytes") else bytes(cache)


def plan_calibrator(trt: ModuleType, cache: bytes, algorithm: str = "entropy") -> Any:
    """A calibrator that hands TensorRT the plan's scales as its calibration cache."""
    base = calibrator_base(trt, algorithm)

    class PlanCacheCalibrator(base):  # type: ignore[misc, valid-type]
        """Returns the plan's calibration cache; never calibrates."""

        def __init__(self) -> None:
            base.__init__(self)
            self.cache = bytes(cache)
            self.algorithm = algorithm
            self.cache_reads = 0
            self.batches_requested = 0
            self.written: bytes | None = None
            self.error: str | None = None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is part of the input shapes

        def get_batch(self, names: list[str], *_: Any) -> None:
            self.batches_requested += 1
            self.error = self.error or (
                "TensorRT asked for calibration data instead of using the plan's calibration cache; it rejected the "
                "cache (its header must name the installed TensorRT version and the calibrator's algorithm)"
            )
            return None

        def read_calibration_cache(self, *_: Any) -> bytes:
            self.cache_reads += 1
            return self.cache

        def write_calibration_cache(self, data: Any, *_: Any) -> None:
            self.written = _bytes(data)

    return PlanCacheCalibrator()


def dataset_calibrator(
    trt: ModuleType,
    algorithm: str,
    dataset: Any,
    input_names: list[str],
    *,
    batch_size: int,
    device: Any,
    calibration_shapes: Mapping[str, tuple[int, ...]] | None = None,
    limit: int | None = None,
    cache_path: str | None = None,
) -> Any:
    """A calibrator feeding TensorRT batches of ``dataset`` (an mpcompile ``Dataset``) from device buffers.

    ``device`` is a ``cuda_memory.DeviceBuffers``; ``calibration_shapes`` (input → shape) are
    the shapes of the calibration profile: batches of another shape are skipped.
    """
    base = calibrator_base(trt, algorithm)

    class DatasetCalibrator(base):  # type: ignore[misc, valid-type]
        """Feeds float32 batches from an mpcompile dataset; keeps TensorRT's cache in ``written``."""

        def __init__(self) -> None:
            base.__init__(self)
            self.algorithm = algorithm
            self.batches_served = 0
            self.batches_skipped = 0
            self.written: bytes | None = None
            self.error: str | None = None
            self._batches: Iterator[dict[str, np.ndarray]] = iter(dataset.batches(batch_size, limit=limit))

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is part of the input shapes

        def _next(self) -> dict[str, np.ndarray] | None:
            for feeds in self._batches:
                if calibration_shapes and any(tuple(feeds[n].shape) != tuple(calibration_shapes[n]) for n in calibration_shapes):
                    self.batches_skipped += 1
                    continue
                return feeds
            return None

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            try:
                feeds = self._next()
                if feeds is None:
                    return None
                pointers = []
                for name in names:
                    if name not in feeds:
                        raise BackendError(f"calibration data has no input {name!r} (it has {sorted(feeds)})")
                    array = feeds[name]
                    if array.dtype.kind == "f":
                        array = array.astype(np.float32, copy=False)  # TensorRT calibrates on float32 inputs
                    pointers.append(int(device.upload(name, np.ascontiguousarray(array))))
                device.synchronize()
                self.batches_served += 1
                return pointers
            except Exception as exc:  # TensorRT would swallow it: keep it for the builder
                self.error = self.error or f"{type(exc).__name__}: {exc}"
                return None

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            return None  # always calibrate on the data

        def write_calibration_cache(self, data: Any, *_: Any) -> None:
            self.written = _bytes(data)
            if cache_path:
                from mpcompile.backends.api import serde

                serde.write_atomic(cache_path, self.written)

    return DatasetCalibrator()
