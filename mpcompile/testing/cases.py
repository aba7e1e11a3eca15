"""Model cases of the conformance suite: small generated ONNX models that cover the planned operators.

Used by mpcompile's own tests and by the pytest plugin that third-party backend authors
run (``pytest --pyargs mpcompile.testing.testsuite --mpcompile-backend NAME``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def small_cnn(seed: int = 0, batch: int | str = "N", with_bn: bool = False, softmax: bool = False) -> onnx.ModelProto:
    """input[N,3,16,16] → Conv3x3 → (BN) → Relu → MaxPool → Conv3x3 → Relu → GlobalAvgPool → Flatten → Gemm → (Softmax)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("w2", rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32)),
        _init("b2", rng.normal(0, 0.1, (16,)).astype(np.float32)),
        _init("wfc", rng.normal(0, 0.3, (10, 16)).astype(np.float32)),
        _init("bfc", rng.normal(0, 0.1, (10,)).astype(np.float32)),
    ]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    prev = "c1"
    if with_bn:
        inits += [
            _init("bn_g", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
            _init("bn_b", rng.normal(0, 0.1, 8).astype(np.float32)),
            _init("bn_m", rng.normal(0, 0.1, 8).astype(np.float32)),
            _init("bn_v", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
        ]
        nodes.append(helper.make_node("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn1"], name="bn1"))
        prev = "bn1"
    nodes += [
        helper.make_node("Relu", [prev], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], name="fc", transB=1),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
        out = "probs"
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def residual_mlp(seed: int = 0, dim: int = 16) -> onnx.ModelProto:
    """input[N,dim] → MatMul → Add(bias) → Relu → MatMul → Add(residual) → Sigmoid; covers MatMul, Add, Sigmoid."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (dim, dim)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, (dim,)).astype(np.float32)),
        _init("w2", rng.normal(0, 0.3, (dim, dim)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="bias1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "x"], ["res"], name="residual"),
        helper.make_node("Sigmoid", ["res"], ["y"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def random_inputs(model: onnx.ModelProto, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    init_names = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else n for d in vi.type.tensor_type.shape.dim]
        dims[0] = n
        feeds[vi.name] = rng.normal(0, 1, dims).astype(np.float32)
    return feeds


def depthwise_cnn(seed: int = 0) -> onnx.ModelProto:
    """input[N,4,12,12] → Conv1x1 → Relu → depthwise Conv3x3 (group=8) → Relu → Add(residual) → AveragePool."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("pw", rng.normal(0, 0.4, (8, 4, 1, 1)).astype(np.float32)),
        _init("pwb", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("dw", rng.normal(0, 0.4, (8, 1, 3, 3)).astype(np.float32)),
        _init("dwb", rng.normal(0, 0.1, (8,)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "pw", "pwb"], ["c1"], name="pointwise"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "dw", "dwb"], ["c2"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r1", "r2"], ["s"], name="residual"),
        helper.make_node("AveragePool", ["s"], ["y"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "depthwise_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


#: name -> builder, the model cases every backend is held to
CASES = {
    "small_cnn": lambda: small_cnn(),
    "small_cnn_softmax": lambda: small_cnn(softmax=True),
    "residual_mlp": lambda: residual_mlp(),
    "depthwise_cnn": lambda: depthwise_cnn(),
}
