"""``onnx.reference`` evaluation of fake-quant graphs at any opset.

``onnx.reference`` implements QuantizeLinear/DequantizeLinear only from opset 19 on, while
imported models are often opset 13–17. These two operators follow the numerics contract
(the same math as ``QuantSpec``), so graphs evaluate unchanged at their own opset.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _expand(param: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return param.reshape(shape)


def evaluator(model: Any):  # noqa: ANN201
    """A ``ReferenceEvaluator`` for ``model`` (a ModelProto or path) with opset-independent Q/DQ."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class QuantizeLinear(OpRun):
        op_domain = ""

        def _run(self, x, y_scale, y_zero_point=None, axis=1, **_attrs):  # noqa: ANN001, ANN202
            zp = np.zeros((), np.uint8) if y_zero_point is None else y_zero_point
            info = np.iinfo(zp.dtype)
            q = np.rint(x / _expand(y_scale, x, axis)).astype(np.float64) + _expand(zp, x, axis).astype(np.float64)
            return (np.clip(q, info.min, info.max).astype(zp.dtype),)

    class DequantizeLinear(OpRun):
        op_domain = ""

        def _run(self, x, x_scale, x_zero_point=None, axis=1, **_attrs):  # noqa: ANN001, ANN202
            zp = np.zeros((), x.dtype) if x_zero_point is None else x_zero_point
            value = (x.astype(np.int64) - _expand(zp, x, axis).astype(np.int64)).astype(np.float32) * _expand(x_scale, x, axis)
            return (value.astype(np.float32),)

    return ReferenceEvaluator(model, new_ops=[QuantizeLinear, DequantizeLinear])
