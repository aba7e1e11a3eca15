"""The TensorRT lowering options, validated once.

``Backend.lower(plan, out_dir, **options)`` receives every option the pipeline passes to all
backends; names this backend does not know are ignored (and listed in the artifact
metadata), values it knows are checked here with a message that says what is accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mpcompile.errors import BackendError

QUANTIZATION_MODES = ("explicit", "implicit")
CALIBRATORS = ("plan", "entropy", "minmax")
DEVICE_LIBRARIES = ("torch", "cupy", "cuda-python")
DEFAULT_BATCH = 32
DEFAULT_WORKSPACE = 1 << 30


@dataclasses.dataclass(frozen=True)
class LowerOptions:
    """Options of ``TensorRTBackend.lower`` and ``lower_onnx_only``.

    * ``stem``: file name stem of the artifact files (``<stem>.trt.onnx``, ``<stem>.engine``…).
    * ``onnx_only``: write the TensorRT-ready QDQ ONNX, the float ONNX and the calibration cache
      (plus ``trtexec`` command lines) without TensorRT; no engine.
    * ``quantization``: ``"explicit"`` (Q/DQ ONNX, strongly typed network) or ``"implicit"``
      (TensorRT 10 only: float ONNX + INT8 calibrator). Default: implicit on 10.x, explicit on 11.x.
    * ``calibrator`` (implicit only): ``"plan"`` (a calibration cache with the plan's scales: the
      engine uses exactly the plan's numbers), ``"entropy"`` or ``"minmax"`` (TensorRT calibrates
      its own scales on ``calibration_data``; recorded as a deviation).
    * ``calibration_data``: a ``Dataset`` or anything ``open_dataset`` accepts (entropy/minmax
      calibrators; also gives the shapes of dynamic non-batch dims).
    * ``shapes``: ``{input: {"min": shape, "opt": shape, "max": shape}}`` or ``{input: shape}``;
      overrides the profile derived from ``batch_size``/``min_batch_size``/``max_batch_size``.
    * ``workspace``: builder workspace limit in bytes (default 1 GiB).
    * ``tensorrt_version``: the TensorRT that will read the calibration cache (its header must
      match); defaults to the installed one, else the last 10.x release.
    * ``device_library``: ``"torch"``, ``"cupy"`` or ``"cuda-python"`` for device buffers.
    """

    stem: str = "model"
    onnx_only: bool = False
    quantization: str | None = None
    calibrator: str = "plan"
    calibration_data: Any = None
    calibration_samples: int | None = None
    shapes: Mapping[str, Any] | None = None
    batch_size: int = DEFAULT_BATCH
    min_batch_size: int = 1
    max_batch_size: int | None = None
    workspace: int = DEFAULT_WORKSPACE
    tensorrt_version: str | None = None
    device_library: str | None = None
    ignored: tuple[str, ...] = ()

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> LowerOptions:
        known = {f.name for f in dataclasses.fields(cls)} - {"ignored"}
        values = {k: v for k, v in options.items() if k in known and v is not None}
        ignored = tuple(sorted(k for k in options if k not in known))
        parsed = cls(**values, ignored=ignored)
        parsed.validate()
        return parsed

    def validate(self) -> None:
        if self.quantization is not None and self.quantization not in QUANTIZATION_MODES:
            raise BackendError(f"tensorrt: quantization={self.quantization!r}; use 'explicit' or 'implicit'")
        if self.calibrator not in CALIBRATORS:
            raise BackendError(f"tensorrt: calibrator={self.calibrator!r}; use one of {', '.join(CALIBRATORS)}")
        if self.device_library is not None and self.device_library not in DEVICE_LIBRARIES:
            raise BackendError(f"tensorrt: device_library={self.device_library!r}; use one of {', '.join(DEVICE_LIBRARIES)}")
        for name in ("batch_size", "min_batch_size", "workspace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BackendError(f"tensorrt: {name} must be a positive integer, got {value!r}")
        if self.max_batch_size is not None and (not isinstance(self.max_batch_size, int) or self.max_batch_size < self.batch_size):
            raise BackendError(
                f"tensorrt: max_batch_size={self.max_batch_size!r} must be an integer ≥ batch_size ({self.batch_size})"
            )
        if self.min_batch_size > self.batch_size:
            raise BackendError(f"tensorrt: min_batch_size={self.min_batch_size} exceeds batch_size={self.batch_size}")
        if not self.stem or "/" in self.stem or "\\" in self.stem:
            raise BackendError(f"tensorrt: stem={self.stem!r} must be a plain file name stem")
        if self.calibrator != "plan" and self.quantization == "explicit":
            raise BackendError(
                f"tensorrt: calibrator={self.calibrator!r} calibrates implicit INT8; explicit quantization takes the "
                f"plan's scales from Q/DQ nodes. Use quantization='implicit' (TensorRT 10) or calibrator='plan'"
            )
