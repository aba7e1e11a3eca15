"""Whether this CPU runs u8 × s8 integer kernels exactly (ONNX Runtime's MLAS, OpenVINO's oneDNN).

Both multiply uint8 activations by int8 weights. With VNNI (``vpdpbusd``, AVX-512 VNNI or
AVX-VNNI) the products accumulate straight into int32. Without it, x86 kernels use
``vpmaddubsw``, which adds each pair of u8 × s8 products into a *saturating* int16 lane: two
products of 255 × 127 already exceed 32767. ORT's quantization guide names the effect and the
two ways round it, 7-bit weights (``reduce_range``) or u8 × u8 kernels, which widen to 16 bits
before multiplying. Measured on an AVX2-only AMD EPYC: one QLinearMatMul with activations near
255 was 56 LSB off with int8 weights and exact with the same weights stored as uint8; MiniLM's
artifact failed conformance at its first MatMul (7 LSB). OpenVINO 2026.4 (``jit_gemm_I8``) was 60 LSB
off on the same MatMul; with uint8 weights it runs the layer as a float kernel on decompressed
weights (exact, not faster than FP32). XNNPACK (TFLite) widens before multiplying and was exact.
ARM's dot-product kernels do not saturate.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

#: /proc/cpuinfo flags of the x86 instructions that accumulate u8 × s8 products without saturation
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The ``flags`` of ``/proc/cpuinfo`` (or of the given text); None where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


@functools.lru_cache(maxsize=1)
def exact_u8s8() -> bool:
    """True when this machine's ORT u8 × s8 kernels cannot saturate: not x86, or x86 with VNNI.

    An x86 machine whose flags cannot be read (not Linux) counts as saturating: uint8 weights are
    exact everywhere, int8 weights only where VNNI is known to be present.
    """
    if not _x86():
        return True
    flags = cpu_flags()
    return flags is not None and bool(flags & VNNI_FLAGS)


def uint8_weights(choice: str) -> bool:
    """The ``weights`` option resolved: store weights as uint8?"""
    if choice == "auto":
        return not exact_u8s8()
    return choice == "uint8"
