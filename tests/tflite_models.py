"""Small ONNX models for the TFLite backend tests: each covers a family of operators and layouts."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, name, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def mobile_block(seed: int = 0) -> onnx.ModelProto:
    """Stride-2 conv (explicit pads) → Clip(0,6) → depthwise ×2 → HardSwish → 1×1 conv → residual Add →
    Concat with a SAME max-pool branch → AveragePool → GlobalAveragePool → Flatten → Gemm → Softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("dw", rng.normal(0, 0.4, (16, 1, 3, 3)).astype(np.float32)),
        _init("dwb", rng.normal(0, 0.1, (16,)).astype(np.float32)),
        _init("pw", rng.normal(0, 0.3, (8, 16, 1, 1)).astype(np.float32)),
        _init("pwb", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("wfc", rng.normal(0, 0.3, (16, 10)).astype(np.float32)),
        _init("bfc", rng.normal(0, 0.1, (10,)).astype(np.float32)),
        _init("zero", np.array(0.0, np.float32)),
        _init("six", np.array(6.0, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv_s2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["c1", "zero", "six"], ["r1"], name="relu6"),
        helper.make_node("Conv", ["r1", "dw", "dwb"], ["c2"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c2"], ["h2"], name="hswish"),
        helper.make_node("Conv", ["h2", "pw", "pwb"], ["c3"], name="project"),
        helper.make_node("Add", ["c3", "r1"], ["s"], name="residual"),
        helper.make_node("MaxPool", ["r1"], ["m"], name="maxpool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["s", "m"], ["cat"], name="concat", axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ap"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    return _model(nodes, "mobile_block", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], inits)


def decoder_block(seed: int = 0) -> onnx.ModelProto:
    """Conv → LeakyRelu → nearest Resize ×2 → reflect Pad → Conv (valid) → ConvTranspose stride 2 → Tanh,
    and a second output that leaves in NHWC through an explicit Transpose after a Sigmoid."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, (6,)).astype(np.float32)),
        _init("sizes", np.array([1, 6, 16, 16], np.int64)),
        _init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        _init("w2", rng.normal(0, 0.3, (6, 6, 3, 3)).astype(np.float32)),
        _init("b2", rng.normal(0, 0.1, (6,)).astype(np.float32)),
        _init("wt", rng.normal(0, 0.3, (6, 3, 2, 2)).astype(np.float32)),
        _init("bt", rng.normal(0, 0.1, (3,)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["l1"], name="leaky", alpha=0.1),
        helper.make_node("Resize", ["l1", "", "", "sizes"], ["up"], name="upsample", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Pad", ["up", "pads"], ["padded"], name="reflect_pad", mode="reflect"),
        helper.make_node("Conv", ["padded", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("ConvTranspose", ["c2", "wt", "bt"], ["ct"], name="deconv", strides=[2, 2]),
        helper.make_node("Tanh", ["ct"], ["y"], name="tanh"),
        helper.make_node("Sigmoid", ["c2"], ["sg"], name="sigmoid"),
        helper.make_node("Transpose", ["sg"], ["z"], name="to_nhwc", perm=[0, 2, 3, 1]),
    ]
    # batch 1 fixed here: Resize sizes carry it (batch-dynamic models are covered elsewhere)
    return _model(nodes, "decoder_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32]),
                   helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16, 16, 6])], inits)


def attention_block(seed: int = 0, tokens: int = 6, dim: int = 8) -> onnx.ModelProto:
    """x[N,T,D] → LayerNorm → QKV MatMul → Split → q·kᵀ (Transpose) → Mul → Softmax → ·v → MatMul + residual →
    GELU as x·0.5·(1+erf(x/√2)) (the Erf stays float) → ReduceMean over tokens → Gemm."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("ln_g", rng.uniform(0.5, 1.5, dim).astype(np.float32)),
        _init("ln_b", rng.normal(0, 0.1, dim).astype(np.float32)),
        _init("wqkv", rng.normal(0, 0.3, (dim, 3 * dim)).astype(np.float32)),
        _init("split", np.array([dim, dim, dim], np.int64)),
        _init("scale", np.array(1.0 / np.sqrt(dim), np.float32)),
        _init("wo", rng.normal(0, 0.3, (dim, dim)).astype(np.float32)),
        _init("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("half", np.array(0.5, np.float32)),
        _init("axes", np.array([1], np.int64)),
        _init("whead", rng.normal(0, 0.3, (4, dim)).astype(np.float32)),
        _init("bhead", rng.normal(0, 0.1, (4,)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_g", "ln_b"], ["ln"], name="layernorm", axis=-1),
        helper.make_node("MatMul", ["ln", "wqkv"], ["qkv"], name="qkv"),
        helper.make_node("Split", ["qkv", "split"], ["q", "k", "v"], name="split", axis=2),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"], name="scores"),
        helper.make_node("Mul", ["qk", "scale"], ["qks"], name="scale"),
        helper.make_node("Softmax", ["qks"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"], name="context"),
        helper.make_node("MatMul", ["ctx", "wo"], ["proj"], name="out_proj"),
        helper.make_node("Add", ["proj", "x"], ["res"], name="residual"),
        helper.make_node("Div", ["res", "sqrt2"], ["g_div"], name="gelu_div"),
        helper.make_node("Erf", ["g_div"], ["g_erf"], name="gelu_erf"),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"], name="gelu_add"),
        helper.make_node("Mul", ["res", "g_add"], ["g_mul"], name="gelu_mul"),
        helper.make_node("Mul", ["g_mul", "half"], ["gelu"], name="gelu_half"),
        helper.make_node("ReduceMean", ["gelu", "axes"], ["pooled"], name="pool", keepdims=0),
        helper.make_node("Gemm", ["pooled", "whead", "bhead"], ["y"], name="head", transB=1),
    ]
    return _model(nodes, "attention_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens, dim])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits, opset=18)


def embedding_bag(seed: int = 0, vocab: int = 20, dim: int = 8) -> onnx.ModelProto:
    """ids[N,T] int64 → Gather(embedding table) → Unsqueeze → Slice → Squeeze → ReduceMax(tokens) → Gemm → Relu."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("table", rng.normal(0, 1.0, (vocab, dim)).astype(np.float32)),
        _init("ax1", np.array([1], np.int64)),
        _init("starts", np.array([0], np.int64)),
        _init("ends", np.array([4], np.int64)),
        _init("ax2", np.array([2], np.int64)),
        _init("w", rng.normal(0, 0.3, (dim, 6)).astype(np.float32)),
        _init("b", rng.normal(0, 0.1, (6,)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embedding", axis=0),
        helper.make_node("Unsqueeze", ["emb", "ax1"], ["emb4"], name="unsqueeze"),
        helper.make_node("Slice", ["emb4", "starts", "ends", "ax2"], ["first"], name="first_tokens"),
        helper.make_node("Squeeze", ["first", "ax1"], ["first3"], name="squeeze"),
        helper.make_node("ReduceMax", ["first3"], ["pooled"], name="maxpool_tokens", axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "w", "b"], ["h"], name="fc"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    return _model(nodes, "embedding_bag", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)


def masked_encoder(seed: int = 0, tokens: int = 8, dim: int = 8, heads: int = 2, vocab: int = 20) -> onnx.ModelProto:
    """A BERT layer as a static-shape export writes it (batch 1): int64 ids → Gather (embedding) + positions →
    LayerNorm → multi-head attention whose mask is built in bool (Cast → Gather → Unsqueeze → And → Expand) and
    applied with Where(0, −3.4e38) → erf GELU → mask-weighted mean pooling (Cast to float, ReduceSum, Clip, Div)."""
    rng = np.random.default_rng(seed)
    hd = dim // heads
    causal = np.tril(np.ones((tokens, tokens), bool)) | np.eye(tokens, k=1, dtype=bool)
    inits = [
        _init("table", rng.normal(0, 1.0, (vocab, dim)).astype(np.float32)),
        _init("positions", rng.normal(0, 0.2, (1, tokens, dim)).astype(np.float32)),
        _init("ln_g", rng.uniform(0.5, 1.5, dim).astype(np.float32)),
        _init("ln_b", rng.normal(0, 0.1, dim).astype(np.float32)),
        _init("wq", rng.normal(0, 0.4, (dim, dim)).astype(np.float32)),
        _init("wk", rng.normal(0, 0.4, (dim, dim)).astype(np.float32)),
        _init("wv", rng.normal(0, 0.4, (dim, dim)).astype(np.float32)),
        _init("bq", rng.normal(0, 0.1, (dim,)).astype(np.float32)),
        _init("heads_shape", np.array([1, tokens, heads, hd], np.int64)),
        _init("merge_shape", np.array([1, tokens, dim], np.int64)),
        _init("scale", np.array(1.0 / np.sqrt(hd), np.float32)),
        _init("positions_idx", np.arange(tokens, dtype=np.int64)),
        _init("ax12", np.array([1, 2], np.int64)),
        _init("ax2", np.array([2], np.int64)),
        _init("ax1", np.array([1], np.int64)),
        _init("allowed", causal.reshape(1, 1, tokens, tokens)),
        _init("expand_shape", np.array([1, heads, tokens, tokens], np.int64)),
        _init("zero", np.array(0.0, np.float32)),
        _init("lowest", np.array(np.finfo(np.float32).min, np.float32)),
        _init("wo", rng.normal(0, 0.4, (dim, dim)).astype(np.float32)),
        _init("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("half", np.array(0.5, np.float32)),
        _init("tiny", np.array(1e-9, np.float32)),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embedding", axis=0),
        helper.make_node("Add", ["emb", "positions"], ["emb_pos"], name="add_positions"),
        helper.make_node("LayerNormalization", ["emb_pos", "ln_g", "ln_b"], ["h"], name="layernorm", axis=-1, epsilon=1e-12),
        # the attention mask, in bool
        helper.make_node("Cast", ["mask"], ["mask_b"], name="mask_to_bool", to=TensorProto.BOOL),
        helper.make_node("Gather", ["mask_b", "positions_idx"], ["mask_g"], name="mask_gather", axis=1),
        helper.make_node("Unsqueeze", ["mask_g", "ax12"], ["mask4"], name="mask_unsqueeze"),
        helper.make_node("Cast", ["mask4"], ["mask4_b"], name="mask_recast", to=TensorProto.BOOL),
        helper.make_node("And", ["allowed", "mask4_b"], ["keep"], name="mask_and"),
        helper.make_node("Expand", ["keep", "expand_shape"], ["keep_heads"], name="mask_expand"),
        helper.make_node("Where", ["keep_heads", "zero", "lowest"], ["mask_bias"], name="mask_where"),
        # attention
        helper.make_node("MatMul", ["h", "wq"], ["q0"], name="q_proj"),
        helper.make_node("Add", ["bq", "q0"], ["q1"], name="q_bias"),
        helper.make_node("MatMul", ["h", "wk"], ["k0"], name="k_proj"),
        helper.make_node("MatMul", ["h", "wv"], ["v0"], name="v_proj"),
        helper.make_node("Reshape", ["q1", "heads_shape"], ["q2"], name="q_heads"),
        helper.make_node("Reshape", ["k0", "heads_shape"], ["k2"], name="k_heads"),
        helper.make_node("Reshape", ["v0", "heads_shape"], ["v2"], name="v_heads"),
        helper.make_node("Transpose", ["q2"], ["q"], name="q_t", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k2"], ["kt"], name="k_t", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v2"], ["v"], name="v_t", perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "mask_bias"], ["masked"], name="apply_mask"),
        helper.make_node("Softmax", ["masked"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"], name="context"),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], name="ctx_t", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx_m"], name="merge_heads"),
        helper.make_node("MatMul", ["ctx_m", "wo"], ["proj"], name="out_proj"),
        helper.make_node("Add", ["proj", "h"], ["res"], name="residual"),
        # GELU as PyTorch exports it
        helper.make_node("Div", ["res", "sqrt2"], ["g_div"], name="gelu_div"),
        helper.make_node("Erf", ["g_div"], ["g_erf"], name="gelu_erf"),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"], name="gelu_add"),
        helper.make_node("Mul", ["res", "g_add"], ["g_mul"], name="gelu_mul"),
        helper.make_node("Mul", ["g_mul", "half"], ["gelu"], name="gelu_half"),
        # masked mean pooling
        helper.make_node("Unsqueeze", ["mask", "ax2"], ["mask3"], name="pool_unsqueeze"),
        helper.make_node("Cast", ["mask3"], ["mask_f"], name="mask_to_float", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["gelu", "mask_f"], ["weighted"], name="pool_weight"),
        helper.make_node("ReduceSum", ["weighted", "ax1"], ["summed"], name="pool_sum", keepdims=0),
        helper.make_node("ReduceSum", ["mask_f", "ax1"], ["count"], name="pool_count", keepdims=0),
        helper.make_node("Clip", ["count", "tiny"], ["count_c"], name="pool_clip"),
        helper.make_node("Div", ["summed", "count_c"], ["y"], name="pool_div"),
    ]
    return _model(nodes, "masked_encoder",
                  [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, tokens]),
                   helper.make_tensor_value_info("mask", TensorProto.INT64, [1, tokens])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])], inits)


def masked_encoder_feeds(n: int, tokens: int = 8, vocab: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids and padding masks (1 for the first 2..tokens positions, 0 after) for ``masked_encoder``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, tokens + 1, n)
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64)
    return {"ids": rng.integers(0, vocab, (n, tokens)).astype(np.int64), "mask": mask}


def channel_mixer(seed: int = 0) -> onnx.ModelProto:
    """Conv → Relu → Reshape [N,C,H·W] → Transpose → MatMul (tokens × channels) → Relu → ReduceMean → Sub → Mul,
    and a Reshape back to 4-D feeding a Conv (a transpose before and after the 2-D section)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (8, 2, 3, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("shape3", np.array([0, 8, 16], np.int64)),
        _init("wm", rng.normal(0, 0.3, (8, 8)).astype(np.float32)),
        _init("bm", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("shape4", np.array([-1, 8, 4, 4], np.int64)),
        _init("w2", rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)),
        _init("gain", rng.uniform(0.5, 1.5, (4, 1, 1)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Reshape", ["r1", "shape3"], ["tokens_cf"], name="to_tokens"),
        helper.make_node("Transpose", ["tokens_cf"], ["tokens"], name="channels_last", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "wm"], ["mixed"], name="mix"),
        helper.make_node("Add", ["mixed", "bm"], ["mixed_b"], name="mix_bias"),
        helper.make_node("Relu", ["mixed_b"], ["mr"], name="relu2"),
        helper.make_node("Transpose", ["mr"], ["back_cf"], name="channels_first", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["back_cf", "shape4"], ["img"], name="to_image"),
        helper.make_node("Conv", ["img", "w2"], ["c2"], name="conv2"),
        helper.make_node("ReduceMean", ["c2"], ["mu"], name="mean", axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["c2", "mu"], ["centered"], name="center"),
        helper.make_node("Mul", ["centered", "gain"], ["y"], name="gain"),
    ]
    return _model(nodes, "channel_mixer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])], inits)


def feeds(model: onnx.ModelProto, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``model``: standard normal floats, token ids below 20 for int64 inputs."""
    rng = np.random.default_rng(seed)
    result = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else n for d in vi.type.tensor_type.shape.dim]
        if not vi.type.tensor_type.shape.dim[0].HasField("dim_value"):
            dims[0] = n
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            result[vi.name] = rng.integers(0, 20, dims).astype(np.int64)
        else:
            result[vi.name] = rng.normal(0, 1, dims).astype(np.float32)
    return result


MODELS = {
    "mobile_block": mobile_block,
    "decoder_block": decoder_block,
    "attention_block": attention_block,
    "embedding_bag": embedding_bag,
    "channel_mixer": channel_mixer,
    "masked_encoder": masked_encoder,
}


def single_op(op_type: str, shape: tuple[int, ...], constants: dict[str, np.ndarray] | None = None,
              second_input: tuple[int, ...] | None = None, opset: int = 17, outputs: int = 1,
              **attrs: object) -> onnx.ModelProto:
    """x[shape] (and y[second_input]) → one ``op_type`` node with constant inputs ``constants`` (in order;
    an empty-string key is an omitted input) → out (out0, out1... for several outputs)."""
    constants = constants or {}
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    names = ["x"]
    if second_input is not None:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, list(second_input)))
        names.append("y")
    inits = []
    for key, value in constants.items():
        if key.startswith("_omitted"):
            names.append("")
            continue
        names.append(key)
        inits.append(_init(key, value))
    out_names = ["out"] if outputs == 1 else [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op_type, names, out_names, name=op_type.lower(), **attrs)
    graph = helper.make_graph([node], f"single_{op_type}", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in out_names], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    inferred = {vi.name: vi for vi in model.graph.value_info}
    for out in model.graph.output:
        if out.name in inferred:
            out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def channel_shuffle(seed: int = 0) -> onnx.ModelProto:
    """ShuffleNet's channel shuffle between two grouped convs: Reshape → Transpose → Reshape, plus a Sum."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 0.3, (8, 2, 3, 3)).astype(np.float32)),
        _init("split_shape", np.array([0, 2, 4, 6, 6], np.int64)),
        _init("merge_shape", np.array([0, 8, 6, 6], np.int64)),
        _init("w2", rng.normal(0, 0.3, (8, 4, 1, 1)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="gconv1", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Reshape", ["r1", "split_shape"], ["g"], name="split_groups"),
        helper.make_node("Transpose", ["g"], ["gt"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["gt", "merge_shape"], ["shuffled"], name="merge_groups"),
        helper.make_node("Conv", ["shuffled", "w2"], ["c2"], name="gconv2", group=2),
        helper.make_node("Sum", ["c2", "r1", "shuffled"], ["y"], name="sum3"),
    ]
    return _model(nodes, "channel_shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])], inits)


def temporal_conv(seed: int = 0, samples: int = 96) -> onnx.ModelProto:
    """An audio front end on [N, 1, L]: reflect Pad → a strided Conv with no bias (an STFT as a Conv) →
    Conv k3 → Relu → MaxPool k2 → dilated Conv stride 2 → Clip(0,6) → AveragePool k3 (pads counted) →
    ConvTranspose ×2 → depthwise Conv → GlobalAveragePool, and the Relu output as a second output."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("pads", np.array([0, 0, 8, 0, 0, 8], np.int64)),
        _init("stft", rng.normal(0, 0.3, (6, 1, 16)).astype(np.float32)),
        _init("w1", rng.normal(0, 0.3, (8, 6, 3)).astype(np.float32)),
        _init("b1", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("w2", rng.normal(0, 0.3, (8, 8, 3)).astype(np.float32)),
        _init("b2", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _init("zero", np.array(0.0, np.float32)),
        _init("six", np.array(6.0, np.float32)),
        _init("wt", rng.normal(0, 0.3, (8, 4, 2)).astype(np.float32)),
        _init("bt", rng.normal(0, 0.1, (4,)).astype(np.float32)),
        _init("dw", rng.normal(0, 0.4, (4, 1, 3)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["padded"], name="reflect", mode="reflect"),
        helper.make_node("Conv", ["padded", "stft"], ["spec"], name="stft", kernel_shape=[16], strides=[8]),
        helper.make_node("Conv", ["spec", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["m1"], name="maxpool", kernel_shape=[2], strides=[2]),
        helper.make_node("Conv", ["m1", "w2", "b2"], ["c2"], name="conv2", pads=[2, 2], dilations=[2], strides=[2]),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        helper.make_node("AveragePool", ["r2"], ["a2"], name="avgpool", kernel_shape=[3], pads=[1, 1], count_include_pad=1),
        helper.make_node("ConvTranspose", ["a2", "wt", "bt"], ["up"], name="deconv", strides=[2]),
        helper.make_node("Conv", ["up", "dw"], ["d"], name="depthwise", group=4, pads=[1, 1]),
        helper.make_node("GlobalAveragePool", ["d"], ["y"], name="gap"),
    ]
    return _model(nodes, "temporal_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, samples])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1]),
                   helper.make_tensor_value_info("r1", TensorProto.FLOAT, ["N", 8, samples // 8 + 1])], inits, opset=18)


def graph_model(name: str, nodes: list, inputs: dict[str, list | tuple], outputs: dict[str, int],
                inits: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    """A model from nodes, ``inputs`` (name -> shape list for float32, or (ONNX elem type, shape list)),
    ``outputs`` (name -> ONNX elem type) and constants; output shapes from ONNX shape inference."""
    value_infos = []
    for key, spec in inputs.items():
        elem, shape = spec if isinstance(spec, tuple) else (TensorProto.FLOAT, spec)
        value_infos.append(helper.make_tensor_value_info(key, elem, list(shape)))
    graph = helper.make_graph(nodes, name, value_infos, [helper.make_tensor_value_info(k, t, None) for k, t in outputs.items()],
                              initializer=[_init(k, v) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    inferred = {vi.name: vi for vi in model.graph.value_info}
    for out in model.graph.output:
        if out.name in inferred:
            out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def recurrent(op: str = "LSTM", direction: str = "forward", layout: int = 0, time: int = 5, features: int = 3,
              hidden: int = 4, initial: bool | float = True, peepholes: bool = False, batch_first: bool = True,
              seed: int = 0, **attrs: object) -> onnx.ModelProto:
    """One LSTM/GRU with random weights → Y, Y_h (and Y_c), batch dynamic ("N"), initial states as inputs when
    ``initial`` is True, omitted when False, constants for a batch of 6 when a number (0.0: zeros; else random). ``batch_first``: the model's inputs and outputs put the batch first, as PyTorch exports
    ``batch_first=True`` (Transposes around a layout-0 recurrence; mpcompile's data take samples on axis 0);
    otherwise the ONNX tensors are the interface as they are (``layout`` 1 is batch first by itself)."""
    rng = np.random.default_rng(seed)
    gates = 4 if op == "LSTM" else 3
    d = 2 if direction == "bidirectional" else 1
    inits = {
        "W": rng.normal(0, 0.5, (d, gates * hidden, features)).astype(np.float32),
        "R": rng.normal(0, 0.5, (d, gates * hidden, hidden)).astype(np.float32),
        "B": rng.normal(0, 0.3, (d, 2 * gates * hidden)).astype(np.float32),
    }
    wrap = batch_first and layout == 0
    nodes = []
    if layout == 0 and not wrap:
        x_shape, state_shape = [time, "N", features], [d, "N", hidden]
    else:
        x_shape, state_shape = ["N", time, features], ["N", d, hidden]
    inputs = {"x": x_shape}
    names = ["xt" if wrap else "x", "W", "R", "B", ""]
    if wrap:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    for state in states:
        if isinstance(initial, (int, float)) and not isinstance(initial, bool):
            # constant initial states of a static batch, as PyTorch exports zeros (``initial`` is their value)
            inits[state] = np.zeros((d, 6, hidden), np.float32)
            if initial:
                inits[state] = (inits[state] + rng.normal(0, 0.5, inits[state].shape)).astype(np.float32)
            names.append(state)
        elif initial:
            inputs[state] = state_shape
            if wrap:
                nodes.append(helper.make_node("Transpose", [state], [f"{state}t"], perm=[1, 0, 2]))
            names.append(f"{state}t" if wrap else state)
        elif peepholes:
            names.append("")
    if peepholes:
        inits["P"] = rng.normal(0, 0.3, (d, 3 * hidden)).astype(np.float32)
        names.append("P")
    outputs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    node_outputs = [f"{o}_t" for o in outputs] if wrap else outputs
    nodes.append(helper.make_node(op, names, node_outputs, name=op.lower(), hidden_size=hidden, direction=direction,
                                  layout=layout, **attrs))
    if wrap:
        nodes.append(helper.make_node("Transpose", ["y_t"], ["y"], perm=[2, 0, 1, 3]))
        nodes += [helper.make_node("Transpose", [f"{o}_t"], [o], perm=[1, 0, 2]) for o in outputs[1:]]
    return graph_model(f"{op.lower()}_{direction}_l{layout}", nodes, inputs, dict.fromkeys(outputs, TensorProto.FLOAT),
                       inits, opset=14)
