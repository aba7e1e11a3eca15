"""Named device buffers on the GPU, from whichever CUDA array library is installed.

TensorRT takes raw device pointers (``set_tensor_address``, a calibrator's ``get_batch``) and
a raw stream handle (``execute_async_v3``). Three libraries can provide them: torch, cupy
and cuda-python (NVIDIA's own bindings, what TensorRT's samples use). ``device_buffers()``
picks the first one that sees a CUDA device (or the one asked for). All copies and kernels
of one ``DeviceBuffers`` go through one stream, so their order is the order of the calls;
``download`` waits for the stream.

Imports happen inside the classes: this module imports on machines without CUDA.
"""

from __future__ import annotations

import abc

import numpy as np

from mpcompile.backends.api import BackendUnavailableError
from mpcompile_tensorrt.environment import INSTALL_HINT, cuda_check, cuda_device, cudart


def _raw_bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


class DeviceBuffers(abc.ABC):
    """Device buffers by name, grown on demand and reused between calls."""

    library: str = ""

    @abc.abstractmethod
    def allocate(self, name: str, nbytes: int) -> int:
        """A device pointer to at least ``nbytes`` bytes for ``name`` (reused when large enough)."""

    @abc.abstractmethod
    def upload(self, name: str, array: np.ndarray) -> int:
        """Copy ``array`` (C order) into ``name``'s buffer; returns the device pointer."""

    @abc.abstractmethod
    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Wait for the stream, then copy ``name``'s buffer to a new host array."""

    @abc.abstractmethod
    def stream_handle(self) -> int:
        """The ``cudaStream_t`` (as an int) that uploads, downloads and TensorRT must share."""

    @abc.abstractmethod
    def synchronize(self) -> None: ...

    @abc.abstractmethod
    def free(self) -> None: ...


class TorchBuffers(DeviceBuffers):
    library = "torch"

    def __init__(self, index: int = 0) -> None:
        import torch

        self._torch = torch
        self._device = torch.device("cuda", index)
        self._stream = torch.cuda.Stream(device=self._device)
        self._buffers: dict[str, object] = {}

    def _buffer(self, name: str, nbytes: int):  # noqa: ANN202
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < nbytes:  # type: ignore[attr-defined]
            buf = self._torch.empty(max(nbytes, 1), dtype=self._torch.uint8, device=self._device)
            self._buffers[name] = buf
        return buf

    def allocate(self, name: str, nbytes: int) -> int:
        return int(self._buffer(name, nbytes).data_ptr())

    def upload(self, name: str, array: np.ndarray) -> int:
        raw = _raw_bytes(array)
        buf = self._buffer(name, raw.nbytes)
        source = self._torch.from_numpy(raw.copy() if not raw.flags.writeable else raw)
        with self._torch.cuda.stream(self._stream):
            buf[: raw.nbytes].copy_(source)
        return int(buf.data_ptr())

    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self._stream.synchronize()
        host = self._buffers[name][:nbytes].cpu().numpy()  # type: ignore[index]
        return host.view(dtype).reshape(shape).copy()

    def stream_handle(self) -> int:
        return int(self._stream.cuda_stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def free(self) -> None:
        self._buffers.clear()


class CupyBuffers(DeviceBuffers):
    library = "cupy"

    def __init__(self, index: int = 0) -> None:
        import cupy

        self._cp = cupy
        self._device = cupy.cuda.Device(index)
        with self._device:
            self._stream = cupy.cuda.Stream(non_blocking=False)
        self._buffers: dict[str, object] = {}

    def _buffer(self, name: str, nbytes: int):  # noqa: ANN202
        buf = self._buffers.get(name)
        if buf is None or buf.size < nbytes:  # type: ignore[attr-defined]
            with self._device:
                buf = self._cp.empty(max(nbytes, 1), dtype=self._cp.uint8)
            self._buffers[name] = buf
        return buf

    def allocate(self, name: str, nbytes: int) -> int:
        return int(self._buffer(name, nbytes).data.ptr)

    def upload(self, name: str, array: np.ndarray) -> int:
        raw = _raw_bytes(array)
        buf = self._buffer(name, raw.nbytes)
        buf[: raw.nbytes].set(raw, stream=self._stream)
        return int(buf.data.ptr)

    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        host = self._buffers[name][:nbytes].get(stream=self._stream)  # type: ignore[index]
        self._stream.synchronize()
        return np.asarray(host).view(dtype).reshape(shape).copy()

    def stream_handle(self) -> int:
        return int(self._stream.ptr)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def free(self) -> None:
        self._buffers.clear()


class CudaPythonBuffers(DeviceBuffers):
    library = "cuda-python"

    def __init__(self, index: int = 0) -> None:
        rt = cudart()
        if rt is None:
            raise BackendUnavailableError(f"cuda-python is not installed (pip install cuda-python); {INSTALL_HINT}")
        self._rt = rt
        cuda_check(rt.cudaSetDevice(index))
        self._stream = cuda_check(rt.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, capacity)

    def allocate(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes or not ptr:
            if ptr:
                cuda_check(self._rt.cudaFree(ptr))
            capacity = max(nbytes, 1)
            ptr = int(cuda_check(self._rt.cudaMalloc(capacity)))
            self._buffers[name] = (ptr, capacity)
        return ptr

    def upload(self, name: str, array: np.ndarray) -> int:
        raw = _raw_bytes(array)
        ptr = self.allocate(name, raw.nbytes)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_check(self._rt.cudaMemcpyAsync(ptr, raw.ctypes.data, raw.nbytes, kind, self._stream))
        # The host array is a temporary: wait until the copy has read it.
        cuda_check(self._rt.cudaStreamSynchronize(self._stream))
        return ptr

    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        host = np.empty(shape, dtype=dtype)
        ptr, _ = self._buffers[name]
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._stream))
        cuda_check(self._rt.cudaStreamSynchronize(self._stream))
        return host

    def stream_handle(self) -> int:
        stream = self._stream
        return int(stream.getPtr()) if hasattr(stream, "getPtr") else int(stream)

    def synchronize(self) -> None:
        cuda_check(self._rt.cudaStreamSynchronize(self._stream))

    def free(self) -> None:
        for ptr, _ in self._buffers.values():
            if ptr:
                cuda_check(self._rt.cudaFree(ptr))
        self._buffers.clear()
        if self._stream is not None:
            cuda_check(self._rt.cudaStreamDestroy(self._stream))
            self._stream = None


_CLASSES: dict[str, type[DeviceBuffers]] = {"torch": TorchBuffers, "cupy": CupyBuffers, "cuda-python": CudaPythonBuffers}


def device_buffers(library: str | None = None, index: int = 0) -> DeviceBuffers:
    """Buffers from ``library``, or from the first of torch, cupy, cuda-python that sees CUDA device ``index``."""
    device = cuda_device(index, prefer=library)
    if library is not None and device.library != library:
        raise BackendUnavailableError(f"{library} cannot reach CUDA device {index} (found it through {device.library})")
    return _CLASSES[device.library](index)
