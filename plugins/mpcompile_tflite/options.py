"""The TFLite backend's options: how the flatbuffer is written and how LiteRT runs it."""

from __future__ import annotations

from typing import Literal

from mpcompile.backends.api import BackendOptions, Field


class TFLiteOptions(BackendOptions):
    io: Literal["float", "int8"] = Field(
        "float",
        description="type of the model's inputs and outputs where the plan quantizes them: float (QUANTIZE/"
        "DEQUANTIZE inside the model) or int8 (the integer tensors are the interface; int16 for 16x8 plans)",
    )
    nhwc_inputs: bool = Field(False, description="expose rank-4 inputs in NHWC instead of the ONNX model's NCHW")
    nhwc_outputs: bool = Field(False, description="expose rank-4 outputs in NHWC instead of the ONNX model's NCHW")
    fallback: Literal["float", "error"] = Field(
        "float",
        description="a node TFLite cannot run in its planned integer precision: run it in FP32 with a recorded "
        "deviation (float), or refuse the model listing every such node (error)",
    )
    reference_kernels: bool = Field(False, description="runner: TFLite's reference kernels instead of the optimized ones")
    xnnpack: bool = Field(True, description="runner: use the XNNPACK delegate")
    num_threads: int | None = Field(None, ge=1, description="runner: interpreter threads (default: LiteRT's)")
