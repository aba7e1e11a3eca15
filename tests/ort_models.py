"""Small models for the ONNX Runtime placement tests: the patterns that made int8 slower than FP32."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

VOCAB, SEQ, DIM, HIDDEN = 60, 8, 32, 64


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def tiny_encoder(seed: int = 0) -> onnx.ModelProto:
    """One BERT-style encoder layer on token ids: embedding Gather, LayerNorm read by Q, K, V and the
    residual, single-head attention, erf-GELU MLP, mean over tokens. 6 weighted MatMuls, 2 attention MatMuls."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, s: float = 0.2) -> np.ndarray:
        return rng.normal(0, s, shape).astype(np.float32)

    inits = [
        _init("emb", w(VOCAB, DIM, s=1.0)),
        _init("ln0_g", (1 + w(DIM, s=0.1))), _init("ln0_b", w(DIM, s=0.1)),
        _init("wq", w(DIM, DIM)), _init("bq", w(DIM, s=0.1)),
        _init("wk", w(DIM, DIM)), _init("bk", w(DIM, s=0.1)),
        _init("wv", w(DIM, DIM)), _init("bv", w(DIM, s=0.1)),
        _init("wo", w(DIM, DIM)), _init("bo", w(DIM, s=0.1)),
        _init("ln1_g", (1 + w(DIM, s=0.1))), _init("ln1_b", w(DIM, s=0.1)),
        _init("w1", w(DIM, HIDDEN)), _init("b1", w(HIDDEN, s=0.1)),
        _init("w2", w(HIDDEN, DIM)), _init("b2", w(DIM, s=0.1)),
        _init("ln2_g", (1 + w(DIM, s=0.1))), _init("ln2_b", w(DIM, s=0.1)),
        _init("inv_sqrt_d", np.array(1 / np.sqrt(DIM), np.float32)),
        _init("sqrt2", np.array(np.sqrt(2), np.float32)), _init("one", np.array(1, np.float32)),
        _init("half", np.array(0.5, np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["emb", "ids"], ["e"], name="embed"),
        n("LayerNormalization", ["e", "ln0_g", "ln0_b"], ["h0"], name="ln0", axis=-1),
        n("MatMul", ["h0", "wq"], ["q0"], name="q"), n("Add", ["q0", "bq"], ["q1"], name="q_bias"),
        n("MatMul", ["h0", "wk"], ["k0"], name="k"), n("Add", ["k0", "bk"], ["k1"], name="k_bias"),
        n("MatMul", ["h0", "wv"], ["v0"], name="v"), n("Add", ["v0", "bv"], ["v1"], name="v_bias"),
        n("Transpose", ["k1"], ["kt"], name="k_t", perm=[0, 2, 1]),
        n("MatMul", ["q1", "kt"], ["s0"], name="scores"), n("Mul", ["s0", "inv_sqrt_d"], ["s1"], name="scale"),
        n("Softmax", ["s1"], ["p"], name="softmax", axis=-1),
        n("MatMul", ["p", "v1"], ["c"], name="context"),
        n("MatMul", ["c", "wo"], ["o0"], name="o"), n("Add", ["o0", "bo"], ["o1"], name="o_bias"),
        n("Add", ["o1", "h0"], ["r1"], name="residual1"),
        n("LayerNormalization", ["r1", "ln1_g", "ln1_b"], ["h1"], name="ln1", axis=-1),
        n("MatMul", ["h1", "w1"], ["f0"], name="ff1"), n("Add", ["f0", "b1"], ["f1"], name="ff1_bias"),
        n("Div", ["f1", "sqrt2"], ["g0"], name="gelu_div"), n("Erf", ["g0"], ["g1"], name="gelu_erf"),
        n("Add", ["g1", "one"], ["g2"], name="gelu_add"), n("Mul", ["f1", "g2"], ["g3"], name="gelu_mul"),
        n("Mul", ["g3", "half"], ["g4"], name="gelu_half"),
        n("MatMul", ["g4", "w2"], ["f2"], name="ff2"), n("Add", ["f2", "b2"], ["f3"], name="ff2_bias"),
        n("Add", ["f3", "h1"], ["r2"], name="residual2"),
        n("LayerNormalization", ["r2", "ln2_g", "ln2_b"], ["h2"], name="ln2", axis=-1),
        n("ReduceMean", ["h2"], ["y"], name="pool", axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny_encoder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", SEQ])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", DIM])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_encoder(folder: Path, samples: int = 64) -> tuple[Path, Path]:
    model, data = folder / "tiny_encoder.onnx", folder / "tiny_encoder.calib.npz"
    onnx.save(tiny_encoder(), model)
    np.savez(data, ids=np.random.default_rng(3).integers(0, VOCAB, (samples, SEQ)).astype(np.int64))
    return model, data


def optimized(path: Path, folder: Path) -> onnx.ModelProto:
    """The artifact as ORT's CPU provider runs it (default graph optimizations)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / f"{Path(path).stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def silu_cnn(seed: int = 0, channels: int = 16, size: int = 48, layers: int = 4) -> onnx.ModelProto:
    """Convs each followed by a high-gain activation (SiLU = x·Sigmoid(x), HardSwish), as in YOLO/PicoDet
    detectors: one LSB of a Conv output becomes several LSB of the activation's output."""
    rng = np.random.default_rng(seed)
    inits, nodes, x, cin = [], [], "x", 3
    n = helper.make_node
    for i in range(layers):
        inits += [_init(f"w{i}", rng.normal(0, np.sqrt(2 / (cin * 9)), (channels, cin, 3, 3)).astype(np.float32)),
                  _init(f"b{i}", rng.normal(0, 0.1, channels).astype(np.float32))]
        nodes.append(n("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        if i % 2 == 0:
            nodes += [n("Sigmoid", [f"c{i}"], [f"s{i}"], name=f"sigmoid{i}"), n("Mul", [f"c{i}", f"s{i}"], [f"a{i}"], name=f"silu{i}")]
        else:
            nodes.append(n("HardSwish", [f"c{i}"], [f"a{i}"], name=f"hardswish{i}"))
        x, cin = f"a{i}", channels
    graph = helper.make_graph(nodes, "silu_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", channels, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_silu_cnn(folder: Path, samples: int = 16) -> tuple[Path, Path]:
    model, data = folder / "silu_cnn.onnx", folder / "silu_cnn.calib.npz"
    onnx.save(silu_cnn(), model)
    np.savez(data, x=(2 * np.random.default_rng(1).normal(0, 1, (samples, 3, 48, 48))).astype(np.float32))
    return model, data
