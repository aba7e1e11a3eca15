"""The ONNX Runtime backend's options."""

from __future__ import annotations

from typing import Literal

from mpcompile.backends.api import BackendOptions, Field


class OnnxRuntimeOptions(BackendOptions):
    optimize: bool = Field(
        True,
        description="run artifacts with ORT's graph optimizations (its production default, which fuses Q/DQ into "
        "integer kernels); false runs them unfused, for debugging a disagreement",
    )
    threads: int | None = Field(None, ge=1, description="intra-op threads of the runner's session (default: ORT's)")
    quantization: Literal["static", "dynamic"] = Field(
        "static",
        description="static: the plan's calibrated activation scales (QDQ, integer kernels end to end). "
        "dynamic: MatMuls with constant weights (and Gemms, rewritten as MatMul + Add) keep the plan's int8 "
        "weights but quantize their input per batch at run time (DynamicQuantizeLinear, uint8), everything else "
        "runs in FP32, like ORT's quantize_dynamic; ORT fuses it into DynamicQuantizeMatMul. Faster than static "
        "on transformers whose LayerNorm/Softmax/GELU stay float, and closer to FP32; results then depend on "
        "the batch a sample is in. Conformance holds the artifact to this legalized plan (every change is a "
        "deviation)",
    )
    skip_layernorm_fusion: bool = Field(
        False,
        description="let ORT fuse a residual Add + LayerNormalization into SkipLayerNormalization. Off by default: "
        "the artifact writes that Add as Sum (the same addition), because ORT 1.32's CPU SkipLayerNormalization "
        "measured 4-6x slower than the two ops (AVX-512, [32, 32, 384])",
    )
    weights: Literal["auto", "int8", "uint8"] = Field(
        "auto",
        description="how the int8 weights of Conv/MatMul/Gemm are stored. int8: ORT's u8 x s8 kernels, exact only "
        "on CPUs with VNNI (AVX-512 VNNI or AVX-VNNI) or on ARM; on other x86 CPUs (AVX2, AVX-512 without VNNI) "
        "they add pairs of products in saturating 16-bit lanes (vpmaddubsw), measured here 56 LSB off on a "
        "single MatMul. uint8: the same numbers with the zero-point moved by +128 (exact everywhere: ORT's "
        "u8 x u8 kernels widen to 16 bits first; slower than u8 x s8 on VNNI). auto: int8 when the compiling "
        "machine's CPU has VNNI (or is not x86), else uint8; name one when the artifact will run elsewhere",
    )
    fusion_report: bool = Field(
        True,
        description="after lowering, load the artifact in ORT once (about 0.5 s for MiniLM) and record in the "
        "manifest which nodes became integer kernels, which stayed float, and a speed note",
    )
