"""Real backends with a planted change in their lowering, for tests that must catch (or excuse) it.

Each is the real ONNX Runtime backend whose lowering is edited after the fact, so every model it
lowers (whole plans, sub-models, cut plans) carries the change exactly where the real one would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from mpcompile.backends.registry import resolve_targets
from mpcompile.backends.targets import Target


def _edited_quantize_scales(should_edit: Callable[[str], bool], factor: float) -> Target:
    """ORT, with the scale of every QuantizeLinear whose scale initializer ``should_edit`` multiplied by ``factor``."""
    ort = resolve_targets(["onnxruntime"])[0][0]

    class Planted(type(ort.backend)):
        def lower(self, plan, out_dir, *, stem, options):  # noqa: ANN001, ANN201
            artifact = super().lower(plan, out_dir, stem=stem, options=options)
            model = onnx.load(artifact.path)
            scales = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
            for index, node in enumerate(model.graph.node):
                if node.op_type == "QuantizeLinear" and should_edit(node.input[1]) and node.input[1] in scales:
                    edited = (scales[node.input[1]].astype(np.float64) * factor).astype(np.float32)
                    name = f"planted_{index}"
                    model.graph.initializer.append(numpy_helper.from_array(edited, name))
                    node.input[1] = name
            onnx.save(model, artifact.path)
            return artifact

    return Target(Planted(), ort.options)


def planted_target(victim: str) -> Target:
    """A real bug: one tensor's QuantizeLinear scale 1.5x off its DequantizeLinear."""
    return _edited_quantize_scales(lambda scale: scale == f"{victim}_scale", 1.5)


def tie_breaking_target() -> Target:
    """A backend within the numerics contract that breaks near-ties differently: every activation's
    QuantizeLinear scale is 1e-6 larger, so only values within a millionth of a tie round the other way."""
    return _edited_quantize_scales(lambda scale: True, 1 + 1e-6)
