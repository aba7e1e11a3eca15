"""The OpenVINO backend's options: how the IR is written and how OpenVINO compiles and runs it."""

from __future__ import annotations

from typing import Literal

from mpcompile.backends.api import BackendOptions, Field


class OpenVINOOptions(BackendOptions):
    device: str = Field("CPU", min_length=1, description="OpenVINO device the runner compiles for (CPU; GPU/NPU where "
                        "OpenVINO sees one, unverified here)")
    inference_precision_hint: Literal["f32", "bf16", "f16"] = Field(
        "f32",
        description="precision OpenVINO runs float nodes in (one per compiled model). f32: the plan's FP32 nodes "
        "are FP32 (OpenVINO's CPU default on BF16-capable CPUs is bf16, which would not be the plan); bf16/f16: every "
        "float node is legalized to that precision; the device must list it in OPTIMIZATION_CAPABILITIES",
    )
    compress_to_fp16: bool = Field(
        False,
        description="openvino.save_model(compress_to_fp16=...): store the FP32 nodes' float weights as FP16 in the .bin "
        "(OpenVINO's default; halves the file but rounds those weights, which the plan does not do). The plan's "
        "FP16 nodes always store FP16 weights",
    )
    weights: Literal["auto", "int8", "uint8"] = Field(
        "auto",
        description="how the int8 weights of Conv/MatMul/Gemm are stored. int8: oneDNN's u8 x s8 kernels, exact only "
        "on CPUs with VNNI (AVX-512 VNNI or AVX-VNNI) or on ARM; on other x86 CPUs they saturate 16-bit sums of "
        "product pairs (measured here 60 LSB off on one MatMul). uint8: the same numbers with zero-point + 128; "
        "OpenVINO then runs those layers as float kernels on decompressed weights: exact, smaller than FP32, not "
        "faster. auto: int8 when the compiling machine's CPU has VNNI (or is not x86), else uint8",
    )
    num_streams: int | None = Field(None, ge=1, description="runner: NUM_STREAMS (default: OpenVINO's)")
    num_threads: int | None = Field(None, ge=1, description="runner: INFERENCE_NUM_THREADS (default: OpenVINO's)")
    performance_hint: Literal["LATENCY", "THROUGHPUT"] | None = Field(
        None, description="runner: PERFORMANCE_HINT (default: OpenVINO's)")
    dynamic_quantization: bool = Field(
        False,
        description="runner: let the CPU plugin quantize FP32 MatMul activations on the fly "
        "(DYNAMIC_QUANTIZATION_GROUP_SIZE); off by default because it computes numbers the plan does not have",
    )
