"""A bias written as a separate Add after a Conv/ConvTranspose/Gemm, folded into the layer's bias at import
(passes/fold_bias_add.py), and the OpenVINO crash that pattern caused."""

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mpcompile import importer
from mpcompile.ir import serde
from mpcompile.passes.fold_bias_add import FoldBiasAdd

RNG = np.random.default_rng(0)


def _model(nodes, inits, x_shape, y_shape, opset=17):
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


#: the PP-OCR classifier's channels and feature map there (other sizes did not crash OpenVINO)
C_IN, C_OUT, H, W = 88, 22, 3, 96


def se_conv(bias_shape=(1, C_OUT, 1, 1), conv_bias=False, then=None):
    """GlobalAveragePool → 1×1 Conv (PaddlePaddle's squeeze-excitation) → Add(bias of ``bias_shape``) → Relu."""
    inits = {"w": RNG.normal(0, 0.1, (C_OUT, C_IN, 1, 1)), "b": RNG.normal(0, 0.5, bias_shape)}
    if conv_bias:
        inits["cb"] = RNG.normal(0, 0.5, C_OUT)
    n = helper.make_node
    nodes = [n("GlobalAveragePool", ["x"], ["p"], name="pool"),
             n("Conv", ["p", "w"] + (["cb"] if conv_bias else []), ["c"], name="conv"),
             n("Add", ["c", "b"], ["a"], name="bias_add"), n("Relu", ["a"], ["y"], name="relu")]
    if then:
        nodes.append(then)
    return _model(nodes, inits, ["N", C_IN, H, W], ["N", C_OUT, 1, 1])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _imported(model, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return importer.load(path)


@pytest.mark.parametrize("bias_shape", [(1, C_OUT, 1, 1), (C_OUT, 1, 1), (1,), ()], ids=["1xOx1x1", "Ox1x1", "one", "scalar"])
@pytest.mark.parametrize("conv_bias", [False, True], ids=["no bias", "with bias"])
def test_a_per_channel_add_becomes_the_conv_bias_and_computes_the_same(tmp_path, bias_shape, conv_bias):
    model = se_conv(bias_shape, conv_bias)
    graph = _imported(model, tmp_path)
    assert graph.op_counts().get("Add", 0) == 0
    conv = next(node for node in graph.nodes if node.op_type == "Conv")
    assert conv.outputs == ["a"] and graph.tensors[conv.inputs[2]].value.shape == (C_OUT,)
    x = RNG.normal(0, 1, (3, C_IN, H, W)).astype(np.float32)
    np.testing.assert_allclose(_run(serde.to_onnx(graph), x), _run(model, x), rtol=1e-6, atol=1e-6)


def test_adds_that_are_not_a_bias_stay(tmp_path):
    # A constant that varies along another axis than the channels is not a bias.
    assert _imported(se_conv((1, C_OUT, 1, 6)), tmp_path).op_counts().get("Add") == 1
    assert _imported(se_conv((1, 1, 1, 1, 1)), tmp_path).op_counts().get("Add") == 1  # broadcasts to a higher rank
    # The pre-bias tensor is read by another node too: folding would change what that node reads.
    also = helper.make_node("Sigmoid", ["c"], ["side"], name="side")
    model = se_conv(then=also)
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, ["N", C_OUT, 1, 1]))
    assert _imported(model, tmp_path).op_counts().get("Add") == 1


def _gemm(c_shape=None, add_shape=(6,), beta=1.0):
    n = helper.make_node
    inits = {"w": RNG.normal(0, 0.3, (6, 4)), "b": RNG.normal(0, 0.5, add_shape)}
    if c_shape is not None:
        inits["c0"] = RNG.normal(0, 0.5, c_shape)
    gemm = n("Gemm", ["x", "w"] + (["c0"] if c_shape is not None else []), ["g"], name="gemm", transB=1, beta=beta)
    return _model([gemm, n("Add", ["g", "b"], ["y"], name="bias_add")], inits, [5, 4], [5, 6])


@pytest.mark.parametrize("c_shape", [None, (6,), (1, 6)], ids=["no C", "C [O]", "C [1, O]"])
def test_a_gemm_bias_add_folds_into_its_c(tmp_path, c_shape):
    model = _gemm(c_shape)
    graph = _imported(model, tmp_path)
    assert graph.op_counts().get("Add", 0) == 0
    x = RNG.normal(0, 1, (5, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(serde.to_onnx(graph), x), _run(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model", [_gemm(c_shape=(5, 1)), _gemm(c_shape=(6,), beta=0.5), _gemm(add_shape=(5, 1))],
                         ids=["C per row", "beta 0.5", "Add per row"])
def test_a_gemm_whose_c_or_add_is_not_one_row_keeps_its_add(tmp_path, model):
    assert _imported(model, tmp_path).op_counts().get("Add") == 1


def test_a_qdq_models_pre_bias_quantization_is_kept(tmp_path):
    """In a QDQ model the pre-bias tensor is a quantization point the user trained with: not folded."""
    model = se_conv()
    n = helper.make_node
    model.graph.initializer.extend([numpy_helper.from_array(np.float32(0.05), "s"),
                                    numpy_helper.from_array(np.int8(0), "z")])
    for node in model.graph.node:
        if node.op_type == "Add":
            node.input[0] = "c_dq"
    position = [i for i, node in enumerate(model.graph.node) if node.op_type == "Conv"][0] + 1
    for offset, node in enumerate([n("QuantizeLinear", ["c", "s", "z"], ["c_q"]), n("DequantizeLinear", ["c_q", "s", "z"], ["c_dq"])]):
        model.graph.node.insert(position + offset, node)
    graph = _imported(model, tmp_path)
    assert graph.op_counts().get("Add") == 1 and graph.tensors["c"].quant is not None


def test_the_pass_says_what_it_folded():
    result = FoldBiasAdd()(serde.import_proto(se_conv()))
    assert result.modified and result.notes == ["folded bias_add into the bias of conv"]


# ============================================================================ the OpenVINO crash it avoids
def _se_inputs(n: int, seed: int) -> np.ndarray:
    """Feature maps whose channel means span [-0.2, 1.4], so the pooled input's zero-point is far from -128 and 0."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.2, 1.4, (n, C_IN, 1, 1)) + rng.normal(0, 0.3, (n, C_IN, H, W))).astype(np.float32)


CHILD = textwrap.dedent("""
    import sys, numpy as np, openvino as ov
    compiled = ov.Core().compile_model(ov.Core().read_model(sys.argv[1]), "CPU")
    for n in (32, 1, 5):
        compiled.infer_new_request({0: np.load(sys.argv[2])[:n]})
    print("ran")
""")


def test_an_openvino_artifact_of_a_conv_with_a_separate_bias_runs_at_small_batches(tmp_path):
    """OpenVINO 2026.4 segfaults on an int8 1×1 Conv behind a GlobalAveragePool with an asymmetric input, then an Add
    of a constant, with a dynamic batch run below ~31 samples (the PP-OCR classifier: every batch-1 call). Folded into
    the Conv's bias the pattern is gone. Run in a child process, so a crash is a failure and not the end of the run."""
    pytest.importorskip("openvino")
    from mpcompile.pipeline import compile as compile_model

    path, data = tmp_path / "se.onnx", tmp_path / "se.npz"
    onnx.save(se_conv(), path)
    np.savez(data, x=_se_inputs(16, seed=1))
    np.save(tmp_path / "x.npy", _se_inputs(32, seed=2))
    result = compile_model(str(path), data=str(data), backends=["openvino"], out_dir=str(tmp_path / "out"), progress=False)
    artifact = result.results["openvino"].artifact
    assert artifact is not None, result.results["openvino"].error
    assert result.plan.tensors["p"].quant.zero_point not in (0, -128)  # the asymmetric input the crash needs
    run = subprocess.run([sys.executable, "-c", CHILD, str(artifact.path), str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ran" in run.stdout, (run.returncode, run.stderr[-2000:])
