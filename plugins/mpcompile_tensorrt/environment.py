"""What is installed: the TensorRT Python package (imported lazily) and a CUDA device.

Nothing here imports TensorRT at module import. ``import_tensorrt`` and ``cuda_device``
raise ``BackendUnavailableError`` with the install hint when something is missing, which is
what ``Backend.check_available`` reports in ``mpcompile backends``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from types import ModuleType

from mpcompile.backends.api import BackendUnavailableError

INSTALL_HINT = (
    "pip install 'mpcompile[tensorrt]' on a machine with a CUDA GPU (the full TensorRT wheels come "
    "from NVIDIA's own package index; PyPI's are stubs that fetch from it)"
)

#: Used in the calibration-cache header when TensorRT is not installed (``onnx_only``) and no
#: ``tensorrt_version`` option says which TensorRT will read the cache: the last 10.x release.
DEFAULT_TRT10_VERSION = "10.16.1"


def import_tensorrt() -> ModuleType:
    try:
        return importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or a broken install failing on its shared libraries
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise BackendUnavailableError(f"the tensorrt Python package does not import ({detail}); {INSTALL_HINT}") from None


def tensorrt_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "0"))


def major_version(trt: ModuleType) -> int:
    match = re.match(r"\s*(\d+)", tensorrt_version(trt))
    return int(match.group(1)) if match else 0


@dataclasses.dataclass(frozen=True)
class CudaDevice:
    """The CUDA device engines are built for, and the array library that gives device buffers."""

    name: str
    compute_capability: str  # "8.6"
    library: str  # "torch" | "cupy" | "cuda-python"
    index: int = 0


def _torch_device(index: int) -> CudaDevice | None:
    try:
        import torch
    except Exception:
        return None
    if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
        return None
    major, minor = torch.cuda.get_device_capability(index)
    return CudaDevice(torch.cuda.get_device_name(index), f"{major}.{minor}", "torch", index)


def _cupy_device(index: int) -> CudaDevice | None:
    try:
        import cupy
    except Exception:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() <= index:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(index)
    except Exception:
        return None
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return CudaDevice(name, f"{props['major']}.{props['minor']}", "cupy", index)


def cudart() -> ModuleType | None:
    """cuda-python's runtime module (``cuda.bindings.runtime`` since 12.6, ``cuda.cudart`` before)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except Exception:
            continue
    return None


def cuda_check(result: tuple) -> object:
    """Unpack a cuda-python ``(error, value...)`` tuple, raising on an error code."""
    err, *rest = result
    code = int(getattr(err, "value", err))
    if code != 0:
        raise RuntimeError(f"CUDA error {code} ({getattr(err, 'name', err)})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def _cuda_python_device(index: int) -> CudaDevice | None:
    rt = cudart()
    if rt is None:
        return None
    try:
        if cuda_check(rt.cudaGetDeviceCount()) <= index:
            return None
        props = cuda_check(rt.cudaGetDeviceProperties(index))
    except Exception:
        return None
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return CudaDevice(name, f"{props.major}.{props.minor}", "cuda-python", index)


LIBRARIES = ("torch", "cupy", "cuda-python")
_PROBES = {"torch": _torch_device, "cupy": _cupy_device, "cuda-python": _cuda_python_device}


def cuda_device(index: int = 0, prefer: str | None = None) -> CudaDevice:
    """The CUDA device, seen through the first array library that is installed and finds one."""
    order = ([prefer] if prefer else []) + [lib for lib in LIBRARIES if lib != prefer]
    for lib in order:
        if lib not in _PROBES:
            raise BackendUnavailableError(f"unknown device library {lib!r}; use one of {', '.join(LIBRARIES)}")
        device = _PROBES[lib](index)
        if device is not None:
            return device
    raise BackendUnavailableError(
        f"no CUDA device {index} found through torch, cupy or cuda-python (TensorRT needs an NVIDIA GPU and one of "
        f"them for device buffers: pip install cuda-python); {INSTALL_HINT}"
    )
