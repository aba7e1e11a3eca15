"""TensorRT's INT8 calibration cache: the text file a 10.x calibrator reads and writes.

Format (one entry per line)::

    TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2      (or -MinMaxCalibration)
    <tensor name>: <8 lowercase hex digits>

The hex digits are the big-endian bits of the float32 *scale* (``scale = amax / 127``),
so ``3c010204`` is 0.0078740157 = 1/127. ``NV_TENSORRT_VERSION`` is
``major·10000 + minor·100 + patch`` for TensorRT 10 (``TRT-100300-…`` is 10.3.0); TensorRT
rejects a cache whose header names another version or another algorithm, so the header
must be written for the TensorRT that will read it.

A calibrator whose ``read_calibration_cache`` returns a cache written here from the plan's
scales makes TensorRT skip calibration and use exactly those numbers. Pure Python: no
TensorRT needed to write, read or check a cache.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mpcompile.backends.api import BackendError

ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_ENTRY = re.compile(r"^(.*): ([0-9a-fA-F]{1,8})$")


def nv_tensorrt_version(version: str) -> int:
    """``NV_TENSORRT_VERSION`` of a TensorRT version string: ``"10.3.0.26"`` → 100300.

    TensorRT 10 and later define it as ``major·10000 + minor·100 + patch``; TensorRT 7
    and 8 used ``major·1000 + minor·100 + patch`` (``TRT-8601-…`` is 8.6.1).
    """
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    if not parts:
        raise BackendError(f"cannot read a TensorRT version from {version!r}; expected e.g. '10.3.0'")
    major, minor, patch = (parts + [0, 0, 0])[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def header(version: str | int, algorithm: str = "entropy") -> str:
    """The first line of a cache for TensorRT ``version`` (a version string or an NV_TENSORRT_VERSION)."""
    if algorithm not in ALGORITHMS:
        raise BackendError(f"unknown calibration algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    number = version if isinstance(version, int) else nv_tensorrt_version(version)
    return f"TRT-{number}-{ALGORITHMS[algorithm]}"


def scale_hex(scale: float | np.floating) -> str:
    """Big-endian float32 bits of ``scale`` as 8 lowercase hex digits."""
    return f"{int(np.asarray(scale, dtype=np.float32).reshape(()).view(np.uint32)):08x}"


def hex_scale(text: str) -> np.float32:
    """Inverse of :func:`scale_hex` (fewer than 8 digits are accepted: some writers drop leading zeros)."""
    return np.asarray(int(text, 16), dtype=np.uint32).view(np.float32).reshape(())[()]


def scale_from_amax(amax: float) -> np.float32:
    """TensorRT's symmetric int8 scale for a dynamic range ±amax."""
    return np.float32(np.float32(amax) / np.float32(127.0))


@dataclasses.dataclass(frozen=True)
class CalibrationCache:
    """A parsed cache: the TensorRT version number and algorithm of its header, and tensor → scale."""

    version: int
    algorithm: str  # "entropy" | "minmax" | the raw algorithm name for others
    scales: Mapping[str, np.float32]

    def to_text(self) -> str:
        return write_cache(self.scales, self.version, self.algorithm)

    def amax(self, name: str) -> float:
        return float(self.scales[name]) * 127.0


def write_cache(scales: Mapping[str, float | np.floating], version: str | int, algorithm: str = "entropy") -> str:
    """The cache text for ``scales`` (tensor name → float32 scale), in the given order."""
    lines = [header(version, algorithm)]
    for name, scale in scales.items():
        if "\n" in name or "\r" in name:
            raise BackendError(f"tensor name {name!r} contains a line break and cannot go into a calibration cache")
        value = np.float32(scale)
        if not np.isfinite(value) or value <= 0:
            raise BackendError(f"tensor {name!r}: calibration scale must be finite and positive, got {float(value)}")
        lines.append(f"{name}: {scale_hex(value)}")
    return "\n".join(lines) + "\n"


def read_cache(text: str | bytes) -> CalibrationCache:
    """Parse a cache written by TensorRT or by :func:`write_cache`."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BackendError("calibration cache is empty; expected a 'TRT-<version>-<algorithm>' header line")
    match = _HEADER.match(lines[0].strip())
    if match is None:
        raise BackendError(
            f"calibration cache header {lines[0]!r} is not 'TRT-<version>-EntropyCalibration2' or '-MinMaxCalibration'"
        )
    by_name = {v: k for k, v in ALGORITHMS.items()}
    algorithm = by_name.get(match.group(2), match.group(2))
    scales: dict[str, np.float32] = {}
    for number, line in enumerate(lines[1:], start=2):
        entry = _ENTRY.match(line)
        if entry is None:
            raise BackendError(f"calibration cache line {number} {line!r} is not '<tensor>: <hex float32 scale>'")
        scales[entry.group(1)] = hex_scale(entry.group(2))
    return CalibrationCache(int(match.group(1)), algorithm, scales)


def load_cache(path: str | Path) -> CalibrationCache:
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"{path}: no such calibration cache")
    return read_cache(path.read_bytes())
