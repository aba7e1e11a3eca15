"""Lower a plan to OpenVINO IR (``.xml`` + ``.bin``) that carries the plan's numbers.

The path: the legalized plan → a QDQ ONNX written with the shared ``QDQWriter`` (placement
below) → ``openvino.convert_model`` (its ONNX frontend turns every activation Q/DQ pair into a
``FakeQuantize`` with ``levels`` 256 and the plan's range, and every weight's DequantizeLinear
into ``Constant(i8) → Convert → Subtract(zp) → Multiply(scale)``) → ``openvino.save_model``.
OpenVINO's low-precision transformations then run ``FakeQuantize → Convolution/MatMul`` as
u8/i8 integer kernels when the model is compiled.

Placement, as OpenVINO's low-precision transformations expect it:

* weights and biases are stored as integers (int8 per channel with an explicit axis, int32
  bias at ``s_in × s_w``) feeding a DequantizeLinear; on x86 CPUs without VNNI, where oneDNN's
  u8 × s8 kernels saturate, weights are stored as uint8 with zero-point + 128 (option ``weights``;
  ``mpcompile.backends.cpu``): the same numbers, run as float kernels on decompressed weights;
* every annotated activation gets QuantizeLinear → DequantizeLinear right after its producer;
* a Relu whose input the plan left unquantized (the fused activation) also gets the Relu's
  Q/DQ on its producer's output: with the Relu's zero-point at the bottom of the integer range
  the quantizer itself clamps negatives, so the numbers do not change and the producer's
  output is a FakeQuantize, which is what lets the kernel run in integers;
* FP16 nodes read their float constants as FP16 initializers cast to FP32 (OpenVINO keeps such
  ``Constant(f16) → Convert`` weights compressed; the values are the plan's FP16 weights).

``lower`` then reads the IR back and checks every FakeQuantize against the plan's spec of the
tensor it produces (``inspect.check_fake_quantize``): a mismatch is an error, not an artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mpcompile.backends.api import Artifact, BackendError, Graph, Precision, QDQWriter, Tensor, serde, uint8_weights
from mpcompile_openvino.options import OpenVINOOptions

#: where the IR's rt_info holds the plan tensor -> IR tensor map (JSON), read by the runner
TENSOR_MAP_RT_INFO = ("mpcompile", "tensor_map")

#: names the FP16 nodes' weights carry between the QDQ ONNX and the IR (``_fp16_weights``)
FP16_SUFFIX = "_from_fp16"


class OpenVINOPlacer(QDQWriter):
    """The shared placement, with FP16 nodes' constants stored as FP16 and graph inputs quantized exactly first."""

    #: ConvTranspose keeps int8 weights: with uint8 weights (zero-point 128) OpenVINO 2026.4 computed a few values
    #: of PP-OCR's detector's ConvTranspose 255 LSB off the plan (AVX2-only CPU), where Conv/MatMul/Gemm were exact
    uint8_weight_ops = frozenset({"Conv", "MatMul", "Gemm"})

    def prepare(self) -> None:
        self._fp16_constants()
        self._exact_input_quantizers()

    def _exact_input_quantizers(self) -> None:
        """Each quantized graph input: ``Div(s) → Round → Clip → Mul(s)`` before its Q/DQ (ONNX's arithmetic).

        A FakeQuantize multiplies by a precomputed reciprocal of the scale, so a value whose ``x/s`` is a tie
        in exact arithmetic rounds by float error, and not like ONNX's ``rint(x/s)``. Inside a network such
        values are rare; in input data they are the rule (pixels normalised as ``k/127.5 − 1`` with the
        scale 2/255 are all ties: 22 % of a real OCR classifier's input integers came out 1 LSB off, and the
        difference cascaded to 58 LSB at its softmax). ONNX's own quantizer written as float ops computes the
        plan's integers exactly; the FakeQuantize after it then reads values on its grid (no ties left) and
        still lets the first Conv/MatMul run as an integer kernel.
        """
        g = self.g
        for name in list(g.inputs):
            spec = g.tensors[name].quant
            if spec is None or spec.axis is not None or name in g.outputs:
                continue
            shape, grid = g.tensors[name].shape, g.unique_name(f"{name}_on_grid")
            g.replace_uses(name, grid)
            scale = g.add_tensor(Tensor(g.unique_name(f"{name}_grid_scale"), value=np.array(spec.scale, np.float32)))
            low, high = (g.add_tensor(Tensor(g.unique_name(f"{name}_grid_{side}"), value=np.array(v, np.float32)))
                         for side, v in (("low", spec.qtype.qmin - int(spec.zero_point)),
                                         ("high", spec.qtype.qmax - int(spec.zero_point))))
            steps = g.unique_name(f"{name}_steps")
            self.node("Div", [name, scale.name], steps, np.float32, shape)
            self.node("Round", [steps], f"{steps}_rounded", np.float32, shape)  # half to even, as rint
            self.node("Clip", [f"{steps}_rounded", low.name, high.name], f"{steps}_clipped", np.float32, shape)
            self.node("Mul", [f"{steps}_clipped", scale.name], grid, np.float32, shape)
            g.tensors[grid].quant, g.tensors[name].quant = spec, None
            self.tensor_map[name] = grid

    def _fp16_constants(self) -> None:
        """Float constants of FP16 nodes become FP16 initializers + Cast to FP32 (one per constant)."""
        g = self.g
        cast: dict[str, str] = {}
        for node in list(g.nodes):
            if node.precision != Precision.FP16:
                continue
            for i, name in enumerate(node.inputs):
                t = g.tensors.get(name) if name else None
                if t is None or not t.is_constant or t.quant is not None or t.value is None or t.value.dtype != np.float32:
                    continue
                if name not in cast:
                    half = g.add_tensor(Tensor(g.unique_name(f"{name}_fp16"), value=t.value.astype(np.float16)))
                    cast[name] = g.unique_name(f"{name}{FP16_SUFFIX}")
                    self.node("Cast", [half.name], cast[name], np.float32, t.shape, to=1)
                node.inputs[i] = cast[name]


def lower_to_qdq(plan: Graph, *, uint8_weights: bool = False) -> tuple[Graph, dict[str, str]]:
    placer = OpenVINOPlacer(plan)
    placer.uint8_weights = uint8_weights
    graph = placer.place()
    return graph, placer.tensor_map


def _fp16_weights(model) -> None:  # noqa: ANN001
    """``convert_model`` folds ``Cast(f16 initializer)`` into an f32 constant: store it as ``Constant(f16) → Convert``.

    The values are the same (the plan's FP16 weights); the ``.bin`` then holds them in FP16, as
    OpenVINO's own ``compress_to_fp16`` does for every weight.
    """
    import openvino.opset13 as opset
    from openvino import op

    for node in model.get_ops():
        if node.get_type_name() != "Constant" or not any(n.endswith(FP16_SUFFIX) for n in node.output(0).get_names()):
            continue
        half = op.Constant(np.asarray(node.get_data()).astype(np.float16))
        widened = opset.convert(half, "f32")
        widened.output(0).set_names(node.output(0).get_names())
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(widened.output(0))


def write_ir(plan: Graph, out_dir: Path, stem: str, options: OpenVINOOptions, version: str) -> Artifact:
    import openvino as ov

    from mpcompile_openvino.inspect import check_fake_quantize, summary

    out_dir = Path(out_dir)
    uint8 = uint8_weights(options.weights)
    graph, tensor_map = lower_to_qdq(plan, uint8_weights=uint8)
    source = out_dir / f"{stem}.qdq.onnx"
    serde.save_onnx(graph, source)
    try:
        model = ov.convert_model(str(source))
    except Exception as exc:  # OpenVINO's frontend refuses an op or a pattern: this backend's error
        first = str(exc).strip().splitlines()
        raise BackendError(f"openvino.convert_model could not read {source.name}: {first[-1] if first else exc!r}") from None
    _fp16_weights(model)
    names = {n for op in model.get_ops() for out in op.outputs() for n in out.get_names()}
    exposed = {ir: art for ir, art in tensor_map.items() if art in names}
    xml = out_dir / f"{stem}.xml"
    # The map travels inside the IR too, so an artifact given back by path (conform --artifact) is compared
    # per layer on the same tensors as the one just lowered.
    model.set_rt_info(json.dumps(exposed, sort_keys=True), list(TENSOR_MAP_RT_INFO))
    ov.save_model(model, str(xml), compress_to_fp16=options.compress_to_fp16)
    saved = ov.Core().read_model(str(xml))
    problems = check_fake_quantize(saved, plan, exposed)
    if problems:
        raise BackendError(f"the OpenVINO IR of {plan.name!r} does not carry the plan's quantization: " + "; ".join(problems[:6]))
    metadata = {
        "openvino": version,
        "format": "OpenVINO IR",
        "source": source.name,
        "tensor_map": exposed,
        "outputs": list(plan.outputs),
        "compress_to_fp16": options.compress_to_fp16,
        "inference_precision_hint": options.inference_precision_hint,
        "weights": "uint8 (exact on x86 CPUs without VNNI; float kernels on decompressed weights)" if uint8 else "int8",
        "ops": summary(saved),
    }
    if uint8:
        metadata["speed_warning"] = ("this CPU has no VNNI, so the weights are stored as uint8 (exact): OpenVINO runs those "
                                     "layers as float kernels on decompressed weights, not faster than FP32; on a CPU with "
                                     "VNNI, lower with --backend-option openvino.weights=int8")
    return Artifact("openvino", xml, [xml, xml.with_suffix(".bin"), source], metadata=metadata)
