"""ONNX <-> IR conversion. The only module that touches ONNX protobufs.

Three entry points matter:

* ``import_model(path)``: a user's model file → ``Graph`` (checked, upgraded to opset ≥ 13,
  shapes inferred, constants folded). Graph passes (BatchNorm folding, QDQ absorption)
  run afterwards, in ``mpcompile.passes``.
* ``save_plan(graph, path)`` / ``load_plan(path)``: the annotated IR as a standard ONNX
  file. Quantization parameters go into ONNX's own ``quantization_annotation`` (scale
  and zero-point initializers per tensor); the rest (qtype, axis, symmetric, provenance,
  node precisions) into ``metadata_props`` as JSON. The file opens in Netron and runs in
  ONNX Runtime as the FP32 model.
* ``to_onnx(graph)`` / ``save_onnx(graph, path)``: any IR graph (including graphs that
  backends built with QuantizeLinear/DequantizeLinear nodes) as a runnable ONNX model.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mpcompile.errors import ModelLoadError, PlanError, UnsupportedOperatorError
from mpcompile.ir import schema
from mpcompile.ir.graph import Graph, Node, OpaqueAttribute, Tensor
from mpcompile.ir.quant import QuantSpec
from mpcompile.outputs import file_mode

PLAN_FORMAT_VERSION = "1"
_META_FORMAT = "mpcompile.format_version"
_META_QUANT = "mpcompile.quant"
_META_PRECISION = "mpcompile.precision"
_META_GRAPH = "mpcompile.graph_metadata"
_SCALE_SUFFIX = "__mpq_scale"
_ZP_SUFFIX = "__mpq_zero_point"
MIN_OPSET = 13
_FOLD_SIZE_LIMIT = 64 << 20


# ============================================================================ file I/O
def _read_model_proto(path: str | os.PathLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected an .onnx file")
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"{path}: file is empty; expected an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes RuntimeWarning-ish errors
        raise ModelLoadError(
            f"{path}: not a valid ONNX model (protobuf parse failed: {exc}); the file may be truncated or not ONNX"
        ) from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(f"{path}: parsed, but holds no ONNX graph; is this really an .onnx model?")
    where = _undecodable_text(model)
    if where is not None:
        raise ModelLoadError(f"{path}: {where} is not valid UTF-8 text (the file is damaged; re-export or re-copy it)")
    if not model.graph.output:
        raise ModelLoadError(
            f"{path}: the graph declares no outputs, so it computes nothing (export the model with its outputs declared)"
        )
    if load_external_data:
        _load_external_data(model, path.parent, path)
    return model


def _undecodable_text(message: Any, where: str = "") -> str | None:
    """Where a string field of ``message`` holds bytes that are not UTF-8 (protobuf then hands out ``bytes``,
    which no name, key or JSON parser downstream expects), or ``None``."""
    from google.protobuf.descriptor import FieldDescriptor

    if isinstance(message, onnx.TensorProto):  # ListFields() would copy the weights' raw bytes
        texts = [("name", message.name)] + [(f"external_data[{i}]", v) for i, e in enumerate(message.external_data)
                                             for v in (e.key, e.value)]
        return next((f"{where}{label}" for label, text in texts if isinstance(text, bytes)), None)
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == FieldDescriptor.LABEL_REPEATED
        if field.type == FieldDescriptor.TYPE_STRING:
            if any(isinstance(v, bytes) for v in (value if repeated else (value,))):
                return f"{where}{field.name}"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for index, item in enumerate(value if repeated else (value,)):
                label = f"{field.name}[{index}]" if repeated else field.name
                found = _undecodable_text(item, f"{where}{label}.")
                if found is not None:
                    return found
    return None


def _load_external_data(model: onnx.ModelProto, base_dir: Path, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    externals = [t for t in _all_initializers(model) if uses_external_data(t)]
    if not externals:
        return
    base = base_dir.resolve()
    for tensor in externals:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if base not in target.parents and target != base:
            raise ModelLoadError(
                f"{path}: initializer {tensor.name!r} points at external data {location!r} outside the model's "
                f"folder; refusing to read it. Move the data file next to the model."
            )
        if not target.exists():
            raise ModelLoadError(
                f"{path}: external data file {location!r} for initializer {tensor.name!r} is missing; "
                f"copy it next to the model"
            )
    try:
        load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise ModelLoadError(f"{path}: could not read external data: {exc}") from None


def _all_initializers(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return list(model.graph.initializer)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never a half-written artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, file_mode())  # mkstemp makes 0600; follow the umask like open() does
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _serialize(model: onnx.ModelProto, what: str) -> bytes:
    # No ByteSize() pre-check: it walks the whole message (0.08 s for 90 MB of weights), and
    # protobuf itself refuses a message beyond 2 GB (an EncodeError or ValueError, by implementation).
    from google.protobuf.message import EncodeError

    try:
        return model.SerializeToString()
    except (ValueError, EncodeError):  # upb says only "Failed to serialize proto"
        if sum(len(t.raw_data) for t in model.graph.initializer) < 2**31 - (64 << 20):
            raise
        raise UnsupportedOperatorError(
            f"{what} is larger than 2 GB; protobuf cannot hold it in one file (external data output is not supported yet)"
        ) from None


# ============================================================================ import
def import_model(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    """Read a user's ONNX model (FP32 or QDQ) into the IR: checked, opset ≥ 13, shapes inferred, constants folded.

    ``input_shapes`` freezes dynamic input dimensions, so that shape computations fold away
    (needed by backends without dynamic-shape ops, e.g. a transformer's mask arithmetic on TFLite).
    """
    path = Path(path)
    model = _read_model_proto(path)
    return import_proto(model, source=str(path), input_shapes=input_shapes)


def _freeze_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int | None, ...]], source: str,
                         weights: dict[str, np.ndarray]) -> None:
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in weights}
    for name, dims in shapes.items():
        if name not in inputs:
            raise ModelLoadError(f"{source}: --input-shape names {name!r}, which is not an input; inputs: {', '.join(inputs)}")
        shape = inputs[name].type.tensor_type.shape
        if len(shape.dim) != len(dims):
            raise ModelLoadError(f"{source}: input {name!r} has rank {len(shape.dim)}, --input-shape gave {len(dims)} dims")
        for index, (dim, value) in enumerate(zip(shape.dim, dims)):
            if value is None:  # a -1/? placeholder: this dimension stays as the model has it
                continue
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != value:
                raise ModelLoadError(
                    f"{source}: input {name!r} has a fixed dimension {index} of {dim.dim_value}, --input-shape gave "
                    f"{value}; give {dim.dim_value} (or -1 to keep it) there"
                )
            dim.dim_value = int(value)
    # Inferred shapes of the dynamic model would contradict the frozen ones: infer again from scratch.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")


def _name_unknown_dims(model: onnx.ModelProto) -> None:
    """Stored dimensions of -1 or 0 (Paddle and other exporters' "dynamic") become named dynamic dimensions.

    ONNX has no negative dimension; ORT and shape inference would reject or mis-infer such a
    model, so without this it could not be imported, and ``--input-shape`` could not freeze it.
    """
    for vi in list(model.graph.input) + list(model.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for index, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.dim_param = f"{vi.name}_dim{index}"


def check_allowing_unknown_rank(model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model`` on a graph mpcompile wrote, which may hold tensors of unknown rank.

    A Reshape to a shape computed at run time (a Paddle export with a dynamic batch) leaves its
    output's rank unknown until the input shapes are frozen; ONNX allows a type without a shape, but
    the checker requires one on every value info it checks. Those are given an empty shape for the
    check only, then restored, so every other rule still applies.
    """
    unshaped = [
        vi for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")
    ]
    for vi in unshaped:
        vi.type.tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(model, full_check=False)
    finally:
        for vi in unshaped:
            vi.type.tensor_type.ClearField("shape")


def import_proto(model: onnx.ModelProto, source: str = "<model>", input_shapes: dict[str, tuple[int | None, ...]] | None = None,
                 *, check: bool = True) -> Graph:
    """``check=False`` only for a model mpcompile serialized from a graph it imported (checked then): such a
    graph may hold outputs of unknown rank (a Reshape to a shape computed at run time), which the checker
    refuses on graph outputs, and which shape inference resolves once ``input_shapes`` are frozen."""
    _name_unknown_dims(model)
    weights = _lift_weights(model, source)
    try:
        if check:
            onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise ModelLoadError(f"{source}: the ONNX checker rejected the model: {first}") from None
    opset = _default_opset(model)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelLoadError(
                f"{source}: opset {opset} is older than {MIN_OPSET} and onnx.version_converter could not upgrade it "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); re-export the model with opset ≥ {MIN_OPSET}"
            ) from None
        if opset < 11:
            _keep_resize_10_coordinates(model)
    source_opset = check_runtime_opset(model, source)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx", "com.microsoft"):
            raise UnsupportedOperatorError(
                f"{source}: node {node.name or node.op_type!r} uses operator {node.domain}::{node.op_type}, "
                f"which mpcompile cannot import; only standard ONNX operators are supported"
            )
    if input_shapes:
        _freeze_input_shapes(model, input_shapes, source, weights)
    # Folding exposes new static shapes, which let more shape arithmetic fold: rounds until nothing changes
    # (exports that reshape stage after stage, such as Paddle's attention blocks, need one round per stage).
    # Shape nodes fold only where shapes are known: infer first when there are any (PyTorch exports
    # take the Shape of static tensors; frozen inputs make many more static).
    shape_ops = any(node.op_type in ("Shape", "Size") for node in model.graph.node)
    for _round in range(8 if input_shapes or shape_ops else 1):
        if input_shapes or shape_ops:
            del model.graph.value_info[:]
            model = _infer(model, source)
        before = len(model.graph.node)
        _unlift_foldable(model, weights)
        model = _fold_constants(model, source)
        if len(model.graph.node) == before and _round:
            break
    model = _infer(model, source)
    graph = proto_to_graph(model, weights)
    graph.metadata.setdefault("source", source)
    if source_opset is not None:
        graph.metadata["mpcompile.source_opset"] = str(source_opset)
    _check_weights_finite(graph, source)
    return graph


def _keep_resize_10_coordinates(model: onnx.ModelProto) -> None:
    """Resize nodes the version converter made from Upsample (opsets 7-9) or Resize-10, with their meaning kept.

    Before opset 11 both sample at ``x_out / scale`` (asymmetric), and nearest takes the floor when upsampling
    and the ceiling when downsampling (ONNX Runtime's Upsample and Resize-10 kernels, nearest mode "simple").
    The converter's Resize 10 → 11 step sets no coordinate mode, and Resize-11 defaults to
    ``half_pixel``/``round_prefer_floor``: a bilinear Upsample ×2 moved by a quarter pixel (1.16 off on normal
    data). Every Resize of a model converted from opset < 11 comes from one of those two, so each gets the old
    modes explicitly. A nearest Resize-10 that upsamples one axis and downsamples another has no Resize-11 form;
    computed scales (not known here) are taken as upsampling, what Upsample always does.
    """
    constants = {init.name: init for init in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
            continue
        names = {a.name for a in node.attribute}
        if "coordinate_transformation_mode" not in names:
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"nearest")
        if "nearest_mode" in names or mode not in (b"nearest", "nearest"):
            continue
        scales = constants.get(node.input[2]) if len(node.input) > 2 else None
        values = numpy_helper.to_array(scales).reshape(-1) if scales is not None else np.ones(1)
        if np.any(values < 1) and np.any(values > 1):
            raise UnsupportedOperatorError(
                f"Resize {node.name or node.output[0]!r}: a nearest opset-10 resize that upsamples one axis and downsamples "
                f"another (scales {values.tolist()}) rounds each axis differently, which Resize-11 cannot express; "
                f"re-export the model with opset ≥ 11")
        node.attribute.append(helper.make_attribute("nearest_mode", "ceil" if np.any(values < 1) else "floor"))


def _check_weights_finite(graph: Graph, source: str) -> None:
    """Conv/Gemm/MatMul weights and biases that are NaN or infinite: a damaged file, refused by name.

    (Other constants may hold -inf on purpose, e.g. attention masks.)
    """
    from mpcompile.ir import ops

    for node in graph.nodes:
        for index in ops.WEIGHTED.get(node.op_type, ()):
            if index is None or index >= len(node.inputs) or not node.inputs[index]:
                continue
            tensor = graph.tensors.get(node.inputs[index])
            if tensor is None or not tensor.is_constant or tensor.dtype is None or tensor.dtype.kind != "f":
                continue
            bad = int(np.count_nonzero(~np.isfinite(tensor.value)))
            if bad:
                raise ModelLoadError(
                    f"{source}: tensor {tensor.name!r}: {bad} of the {tensor.value.size} weights of node {node.name!r} "
                    "are NaN or infinite (the file is damaged or the export went wrong; re-export the model)"
                )


# ============================================================================ opsets the runtime can run
#: Operators that backends and the fake-quant reference add to a model, at the model's own opset.
_ADDED_OPS = ("QuantizeLinear", "DequantizeLinear", "Cast", "Transpose")
_INT_MAX = 2**31 - 1


@functools.lru_cache(maxsize=1)
def _runtime_registry() -> tuple[str, dict[str, list[int]], dict[str, list[tuple[int, int]]]] | None:
    """ONNX Runtime's version, its ai.onnx schema versions per op, and its CPU kernels' version ranges per op.

    ``None`` where this build of ONNX Runtime does not expose them (the check is then skipped).
    """
    try:
        import onnxruntime
        from onnxruntime.capi import _pybind_state as C

        schemas, kernels = C.get_all_operator_schema(), C.get_all_opkernel_def()
    except Exception:  # pragma: no cover - a minimal or unusual ORT build
        return None
    since: dict[str, list[int]] = {}
    for op_schema in schemas:
        if op_schema.domain in ("", "ai.onnx"):
            since.setdefault(op_schema.name, []).append(int(op_schema.since_version))
    ranges: dict[str, list[tuple[int, int]]] = {}
    for kernel in kernels:
        if kernel.domain in ("", "ai.onnx") and kernel.provider == "CPUExecutionProvider":
            ranges.setdefault(kernel.op_name, []).append(tuple(int(v) for v in kernel.version_range))
    return str(onnxruntime.__version__), since, ranges


def _runtime_runs(op: str, opset: int, registry: tuple) -> bool:
    """Whether ONNX Runtime has a CPU kernel for ``op`` at ``opset``, by its own kernel-matching rule:
    the kernel starts at the schema version the opset resolves to, or is a closed range containing it."""
    _, since, ranges = registry
    versions = [v for v in since.get(op, ()) if v <= opset]
    kernels = ranges.get(op)
    if not versions or not kernels:
        return True  # unknown to ORT, or run as a function body: not an opset question
    node = max(versions)
    return any(start == node or (start < node <= end and end != _INT_MAX) for start, end in kernels)


def _model_ops(model: onnx.ModelProto) -> set[str]:
    """The ai.onnx operators of ``model``, subgraphs (If/Loop/Scan bodies) included."""
    found: set[str] = set()
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.domain in ("", "ai.onnx"):
                found.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attr.graphs)
    return found


def _schema_version(op: str, opset: int) -> int | None:
    try:
        return int(onnx.defs.get_schema(op, opset, "").since_version)
    except Exception:
        return None


def check_runtime_opset(model: onnx.ModelProto, source: str) -> int | None:
    """Refuse a model whose opset ONNX Runtime cannot run, or move it down to one it can when that is exact.

    ORT runs every calibration and the reference, and backends add Q/DQ and Cast nodes at the
    model's opset: a model stamped with an opset ORT does not implement (QuantizeLinear-28 on
    ORT 1.32) would give artifacts ORT cannot load. When none of the model's own operators
    changed between the newest opset ORT runs and the model's, the model means exactly the
    same at that opset (ONNX defines an operator at opset v by its newest schema ≤ v), so it is
    restamped (no converter adapter is involved). Otherwise the model is refused with the opset
    to re-export with. Returns the original opset when it was restamped, else ``None``.
    """
    registry = _runtime_registry()
    opset = _default_opset(model)
    if registry is None or opset <= MIN_OPSET:
        return None
    model_ops = _model_ops(model)
    needed = sorted(model_ops | set(_ADDED_OPS))

    def blocker(version: int) -> str | None:
        return next((op for op in needed if not _runtime_runs(op, version, registry)), None)

    missing = blocker(opset)
    if missing is None:
        return None
    ort_version = registry[0]
    target = next((v for v in range(opset - 1, MIN_OPSET - 1, -1) if blocker(v) is None), None)
    onnx_max = onnx.defs.onnx_opset_version()
    if target is not None and opset <= onnx_max and all(
        _schema_version(op, opset) is not None and _schema_version(op, opset) == _schema_version(op, target)
        for op in model_ops
    ):
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = target
        return opset
    if target is None:
        why = f"it runs this model at no opset from {MIN_OPSET} to {opset}"
        fix = f"re-export the model with another opset, or install an onnxruntime that implements opset {opset}"
    else:
        if opset > onnx_max:
            why = f"onnx {onnx.__version__} defines opsets up to {onnx_max} only, so opset {opset} cannot be moved down exactly"
        else:
            changed = [op for op in sorted(model_ops) if _schema_version(op, opset) != _schema_version(op, target)]
            why = f"{', '.join(changed[:3]) or 'an operator'} changed after opset {target}, so the model cannot be moved down exactly"
        fix = (f"re-export the model with opset ≤ {target}, e.g. torch.onnx.export(..., opset_version={target}), "
               f"or install an onnxruntime that implements opset {opset}")
    raise ModelLoadError(
        f"{source}: opset {opset} is newer than the installed onnxruntime {ort_version} implements "
        f"(no {missing} kernel for opset {opset}; {why}) ({fix})"
    )


#: Initializers with at least this many elements leave the protobuf while a model is imported.
_LIFT_MIN_ELEMENTS = 256


def _lift_weights(model: onnx.ModelProto, source: str) -> dict[str, np.ndarray]:
    """Move the large initializers out of ``model`` into numpy arrays; they become typed graph inputs.

    The checker, shape inference and constant folding each copy the whole protobuf into C++
    and back; without the weights that costs next to nothing (MiniLM import: ~1.0 s → ~0.5 s).
    As inputs they keep their type and shape for inference, and folding leaves them alone;
    ``_unlift_foldable`` gives back those that folding can use.
    """
    g = model.graph
    keep = {o.name for o in g.output}
    declared = {vi.name for vi in g.input}
    lifted: dict[str, np.ndarray] = {}
    remaining = []
    for init in g.initializer:
        if init.name in keep or init.data_location == onnx.TensorProto.EXTERNAL or _element_count(init) < _LIFT_MIN_ELEMENTS:
            remaining.append(init)
            continue
        try:
            lifted[init.name] = numpy_helper.to_array(init)  # read-only: IR constants are never written in place
        except Exception as exc:
            raise ModelLoadError(
                f"{source}: initializer {init.name!r} cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "the file may be damaged"
            ) from None
        if init.name not in declared:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    if lifted:
        del g.initializer[:]
        g.initializer.extend(remaining)
    return lifted


def _element_count(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count


def _unlift_foldable(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> None:
    """Return to ``model`` the lifted weights whose consumer has only constant inputs (a transposed
    weight, a position-embedding lookup once the sequence length is frozen): folding needs their values."""
    g = model.graph
    constant = {init.name for init in g.initializer} | set(weights) | {
        out for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx") for out in n.output
    }
    wanted = {
        i for n in g.node if all(x in constant for x in n.input if x) for i in n.input if i in weights
    }
    if not wanted:
        return
    g.initializer.extend(numpy_helper.from_array(weights.pop(name), name) for name in sorted(wanted))
    inputs = [vi for vi in g.input if vi.name not in wanted]
    del g.input[:]
    g.input.extend(inputs)


def _infer(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise ModelLoadError(f"{source}: ONNX shape inference failed: {str(exc).splitlines()[0]}") from None


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _fold_constants(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """Fold constant subgraphs (Shape→Gather→Unsqueeze chains, Constant nodes) with onnx-graphsurgeon.

    Quantize/Dequantize nodes are never folded: they carry the numbers of a QDQ model.
    """
    if not _foldable(model):
        return model
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.logger import G_LOGGER

    G_LOGGER.severity = G_LOGGER.ERROR
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # graphsurgeon folds through ORT, which logs every fold it cannot do
    try:
        g = gs.import_onnx(model)
        g.fold_constants(
            error_ok=True,
            # Weights generated by ops (ConstantOfShape…) fold; giant ones would only bloat the IR.
            size_threshold=_FOLD_SIZE_LIMIT,
            should_exclude_node=lambda n: n.op in ("QuantizeLinear", "DequantizeLinear"),
        ).cleanup(remove_unused_graph_inputs=False)
        g.toposort()
        folded = gs.export_onnx(g, do_type_check=False)
    except Exception:
        # Folding is an optimization: a model it cannot handle still imports unfolded.
        return model
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    del folded.metadata_props[:]
    folded.metadata_props.extend(model.metadata_props)
    folded.producer_name = model.producer_name
    return folded


def _foldable(model: onnx.ModelProto) -> bool:
    """Whether folding and cleanup could change anything: a node computing only from constants,
    shape arithmetic, or a node no output depends on."""
    g = model.graph
    constant = {init.name for init in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            constant.update(node.output)
        elif node.op_type in ("Shape", "Size") or (
            node.op_type not in ("QuantizeLinear", "DequantizeLinear") and all(i in constant for i in node.input if i)
        ):
            return True
    needed = {o.name for o in g.output}
    for node in reversed(g.node):  # topologically sorted (the checker has made sure)
        if not needed.intersection(node.output):
            return True
        needed.update(node.input)
    return False


# ============================================================================ proto -> IR
def _shape_from_type(type_proto: onnx.TypeProto) -> tuple[np.dtype | None, tuple | None]:
    if not type_proto.HasField("tensor_type"):
        return None, None
    tt = type_proto.tensor_type
    dtype = _np_dtype(tt.elem_type) if tt.elem_type else None
    if not tt.HasField("shape"):
        return dtype, None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return dtype, tuple(dims)


def _np_dtype(elem_type: int) -> np.dtype | None:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def _elem_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _attr_to_py(attr: onnx.AttributeProto) -> Any:
    t = attr.type
    A = onnx.AttributeProto
    if t == A.FLOAT:
        return float(attr.f)
    if t == A.INT:
        return int(attr.i)
    if t == A.STRING:
        return attr.s.decode("utf-8", errors="surrogateescape")
    if t == A.TENSOR:
        return numpy_helper.to_array(attr.t).copy()
    if t == A.FLOATS and attr.floats:
        return [float(x) for x in attr.floats]
    if t == A.INTS and attr.ints:
        return [int(x) for x in attr.ints]
    if t == A.STRINGS and attr.strings:
        return [s.decode("utf-8", errors="surrogateescape") for s in attr.strings]
    return OpaqueAttribute(A.AttributeType.Name(t), attr.SerializeToString())


def _py_to_attr(name: str, value: Any) -> onnx.AttributeProto:
    if isinstance(value, OpaqueAttribute):
        attr = onnx.AttributeProto()
        attr.ParseFromString(value.payload)
        attr.name = name
        return attr
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, bool):
        return helper.make_attribute(name, int(value))
    return helper.make_attribute(name, value)


def proto_to_graph(model: onnx.ModelProto, weights: dict[str, np.ndarray] | None = None) -> Graph:
    """The IR of ``model``; ``weights`` are initializers held outside the protobuf (see ``_lift_weights``)."""
    g = model.graph
    graph = Graph(
        name=g.name or "graph",
        opset_imports={imp.domain if imp.domain != "ai.onnx" else "": int(imp.version) for imp in model.opset_import},
    )
    for init in g.initializer:
        value = numpy_helper.to_array(init).copy()
        graph.tensors[init.name] = Tensor(init.name, value=value)
    for name, value in (weights or {}).items():
        graph.tensors[name] = Tensor(name, value=value)
    initializer_names = set(graph.tensors)
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.name in initializer_names:
            continue
        dtype, shape = _shape_from_type(vi.type)
        graph.tensors[vi.name] = Tensor(vi.name, dtype, shape)
    graph.inputs = [vi.name for vi in g.input if vi.name not in initializer_names]
    graph.outputs = [vi.name for vi in g.output]
    used_names: set[str] = set()
    for index, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{index}"
        while name in used_names:
            name = f"{name}_{index}"
        used_names.add(name)
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            value = _constant_node_value(n)
            if value is not None:
                graph.tensors[n.output[0]] = Tensor(n.output[0], value=value)
                continue
        attrs = {a.name: _attr_to_py(a) for a in n.attribute}
        graph.nodes.append(Node(name, n.op_type, list(n.input), list(n.output), attrs, domain=n.domain))
        for out in n.output:
            if out and out not in graph.tensors:
                graph.tensors[out] = Tensor(out)
        for inp in n.input:
            if inp and inp not in graph.tensors:
                graph.tensors[inp] = Tensor(inp)
    for prop in model.metadata_props:
        graph.metadata[prop.key] = prop.value
    return graph


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t).copy()
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


# ============================================================================ IR -> proto
def _value_info(tensor: Tensor) -> onnx.ValueInfoProto:
    if tensor.dtype is None:
        return helper.make_empty_tensor_value_info(tensor.name)
    shape = None if tensor.shape is None else [d if d is not None else None for d in tensor.shape]
    return helper.make_tensor_value_info(tensor.name, _elem_type(tensor.dtype), shape)


def to_onnx(graph: Graph, *, annotations: bool = False, producer: str = "mpcompile",
            in_memory: frozenset[str] | set[str] = frozenset()) -> onnx.ModelProto:
    """Build a runnable ONNX model from ``graph``; with ``annotations`` also write the plan (see module doc).

    Initializers named in ``in_memory`` are written as external-data references without
    their bytes (see ``onnx_bytes_and_weights``).
    """
    referenced = {i for n in graph.nodes for i in n.inputs if i} | set(graph.outputs)
    initializers = []
    for t in graph.initializers():
        if t.name in in_memory:
            initializers.append(_in_memory_reference(t))
        elif t.name in referenced or t.name in graph.outputs:
            initializers.append(numpy_helper.from_array(np.require(t.value, requirements="C"), t.name))
    nodes = []
    for n in graph.nodes:
        proto = helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, domain=n.domain or None)
        proto.attribute.extend(_py_to_attr(k, v) for k, v in n.attrs.items())
        nodes.append(proto)
    io = set(graph.inputs) | set(graph.outputs)
    described = referenced | _produced(graph)
    value_info = [
        _value_info(t)
        for t in graph.tensors.values()
        if not t.is_constant and t.name not in io and t.dtype is not None and t.name in described
    ]
    g = helper.make_graph(
        nodes,
        graph.name,
        [_value_info(graph.tensor(i)) for i in graph.inputs],
        [_value_info(graph.tensor(o)) for o in graph.outputs],
        initializer=initializers,
        value_info=value_info,
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in sorted(graph.opset_imports.items())]
    model = helper.make_model(g, opset_imports=opsets, producer_name=producer)
    model.ir_version = min(model.ir_version, 10)
    meta = {k: v for k, v in graph.metadata.items() if not k.startswith("mpcompile.")}
    if annotations:
        _write_annotations(graph, model)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=str(value))
    return model


def _produced(graph: Graph) -> set[str]:
    return {o for n in graph.nodes for o in n.outputs if o}


def save_onnx(graph: Graph, path: str | os.PathLike, *, annotations: bool = False) -> Path:
    model = to_onnx(graph, annotations=annotations)
    write_atomic(path, _serialize(model, f"model {graph.name!r}"))
    return Path(path)


def onnx_bytes(graph: Graph) -> bytes:
    """The graph as serialized ONNX, for handing to ONNX Runtime without touching the disk."""
    return _serialize(to_onnx(graph), f"model {graph.name!r}")


#: Element types ONNX Runtime accepts as in-memory initializers (numpy-backed ``OrtValue``s).
_IN_MEMORY_DTYPES = frozenset(np.dtype(t) for t in (
    np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.bool_,
))
_IN_MEMORY_LOCATION = "mpcompile-in-memory"


def onnx_bytes_and_weights(graph: Graph, min_bytes: int = 1024) -> tuple[bytes, dict[str, np.ndarray]]:
    """The graph as serialized ONNX without its large initializers, and those initializers.

    For ONNX Runtime's ``SessionOptions.add_external_initializers``: the weights stay where
    they are instead of being copied into a protobuf, serialized and parsed again (MiniLM:
    0.12 s instead of 0.67 s to create a session). The model bytes alone are not runnable.
    """
    weights = _weights_out_of_protobuf(graph, min_bytes)
    model = to_onnx(graph, in_memory=frozenset(weights))
    return _serialize(model, f"model {graph.name!r}"), weights


def _weights_out_of_protobuf(graph: Graph, min_bytes: int = 1024) -> dict[str, np.ndarray]:
    """The graph's large (used) initializers, C-contiguous, by name."""
    referenced = {i for n in graph.nodes for i in n.inputs if i} | set(graph.outputs)
    return {
        t.name: np.ascontiguousarray(t.value)
        for t in graph.initializers()
        if t.name in referenced and t.value.nbytes >= min_bytes and t.value.dtype in _IN_MEMORY_DTYPES
    }


def _in_memory_reference(tensor: Tensor) -> onnx.TensorProto:
    proto = onnx.TensorProto()
    proto.name = tensor.name
    proto.data_type = _elem_type(tensor.value.dtype)
    proto.dims.extend(tensor.value.shape)
    proto.data_location = onnx.TensorProto.EXTERNAL
    entry = proto.external_data.add()
    entry.key, entry.value = "location", _IN_MEMORY_LOCATION
    return proto


# ============================================================================ annotated plan
def _write_annotations(graph: Graph, model: onnx.ModelProto) -> None:
    taken = {t.name for t in graph.tensors.values()}
    quant_meta: dict[str, Any] = {}
    for tensor in graph.quantized_tensors():
        spec = tensor.quant
        assert spec is not None
        scale_name = _fresh(tensor.name + _SCALE_SUFFIX, taken)
        zp_name = _fresh(tensor.name + _ZP_SUFFIX, taken)
        model.graph.initializer.append(numpy_helper.from_array(np.array(spec.scale, dtype=np.float32), scale_name))
        model.graph.initializer.append(numpy_helper.from_array(np.array(spec.zero_point), zp_name))
        ann = model.graph.quantization_annotation.add()
        ann.tensor_name = tensor.name
        ann.quant_parameter_tensor_names.add(key="SCALE_TENSOR", value=scale_name)
        ann.quant_parameter_tensor_names.add(key="ZERO_POINT_TENSOR", value=zp_name)
        quant_meta[tensor.name] = {
            "qtype": spec.qtype.value,
            "axis": spec.axis,
            "symmetric": spec.symmetric,
            "narrow_range": spec.narrow_range,
            "provenance": dict(spec.provenance),
        }
    precision_meta = {
        n.name: {"precision": n.precision.value, "reason": n.precision_reason} for n in graph.nodes if n.precision
    }
    model.metadata_props.add(key=_META_FORMAT, value=PLAN_FORMAT_VERSION)
    model.metadata_props.add(key=_META_QUANT, value=json.dumps(quant_meta, sort_keys=True))
    model.metadata_props.add(key=_META_PRECISION, value=json.dumps(precision_meta, sort_keys=True))
    extra = {k: v for k, v in graph.metadata.items() if k.startswith("mpcompile.")}
    model.metadata_props.add(key=_META_GRAPH, value=json.dumps(extra, sort_keys=True))


def _fresh(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate = f"{name}_{i}"
        i += 1
    taken.add(candidate)
    return candidate


def save_plan(graph: Graph, path: str | os.PathLike) -> Path:
    """Save the annotated IR (the plan) as a standard ONNX file."""
    return save_onnx(graph, path, annotations=True)


def is_plan(model: onnx.ModelProto) -> bool:
    return any(p.key == _META_FORMAT for p in model.metadata_props)


def load_plan(path: str | os.PathLike) -> Graph:
    """Load a plan written by ``save_plan``, exactly; a plain ONNX model is imported instead."""
    model = _read_model_proto(path)
    if not is_plan(model):
        raise PlanError(f"{path}: not an mpcompile plan (no {_META_FORMAT} metadata); run `mpcompile calibrate` first")
    return plan_from_proto(model, source=str(path))


def load_model_or_plan(path: str | os.PathLike) -> Graph:
    """A plan if the file is one, else the model imported (passes not yet applied)."""
    model = _read_model_proto(path)
    if is_plan(model):
        return plan_from_proto(model, source=str(path))
    return import_proto(model, source=str(path))


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """The file's ModelProto, checked to be a readable ONNX model with a graph (``import_proto`` imports it)."""
    return _read_model_proto(path)


def declared_inputs(model: onnx.ModelProto) -> Graph:
    """A graph holding only ``model``'s inputs (names, dtypes, dims as the file declares them, as ``import_proto``
    names its unknown dims): what data is checked against before the import, so that dims frozen from the data
    cost one import instead of two (the fold passes are most of an import: 1.4 of 1.9 s on MiniLM)."""
    _name_unknown_dims(model)
    initializers = {init.name for init in model.graph.initializer}
    graph = Graph(name=model.graph.name or "graph")
    for vi in model.graph.input:
        if vi.name not in initializers:
            dtype, shape = _shape_from_type(vi.type)
            graph.tensors[vi.name] = Tensor(vi.name, dtype, shape)
            graph.inputs.append(vi.name)
    return graph


def _plan_meta(meta: dict[str, str], key: str, adapter: Any, source: str, root: str) -> Any:
    try:
        data = json.loads(meta.get(key, "{}"))
    except (json.JSONDecodeError, RecursionError) as exc:
        why = exc if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise PlanError(f"{source}: plan metadata {key} is not valid JSON ({why}) ({schema.PLAN_FIX})") from None
    return schema.check(adapter, data, f"{source}: metadata {key}", root=root, fix=schema.PLAN_FIX, error=PlanError)


def plan_from_proto(model: onnx.ModelProto, source: str) -> Graph:
    """The plan in ``model``, validated against the plan schema (``mpcompile.ir.schema``) before it is used.

    A plan that was edited or damaged (a per-channel scale of the wrong length, a float
    zero-point, an unknown qtype, an axis out of range, a scale of 0...) is refused with one
    line naming the file and the tensor; nothing is guessed or truncated.
    """
    meta = {p.key: p.value for p in model.metadata_props}
    version = meta.get(_META_FORMAT)
    if version != PLAN_FORMAT_VERSION:
        raise PlanError(f"{source}: plan format version {version!r} is not supported (expected {PLAN_FORMAT_VERSION})")
    quant_meta = _plan_meta(meta, _META_QUANT, schema.PLAN_QUANT, source, "tensor")
    precision_meta = _plan_meta(meta, _META_PRECISION, schema.PLAN_PRECISION, source, "node")
    graph_meta = _plan_meta(meta, _META_GRAPH, schema.PLAN_GRAPH, source, "key")
    fix = schema.PLAN_FIX
    params = {init.name: init for init in model.graph.initializer}
    in_graph = {vi.name for vi in model.graph.input} | {vi.name for vi in model.graph.output} | {
        name for node in model.graph.node for name in node.input
    }
    annotations: dict[str, tuple[str, str]] = {}
    for ann in model.graph.quantization_annotation:
        name = ann.tensor_name
        where = f"{source}: tensor {name!r}"
        keys = {kv.key: kv.value for kv in ann.quant_parameter_tensor_names}
        if name in annotations:
            raise PlanError(f"{where}: has two quantization annotations ({fix})")
        for key in ("SCALE_TENSOR", "ZERO_POINT_TENSOR"):
            if key not in keys:
                raise PlanError(f"{where}: its quantization annotation has no {key} ({fix})")
            if keys[key] not in params:
                raise PlanError(f"{where}: annotation references missing initializer {keys[key]!r} ({fix})")
            if keys[key] in in_graph:
                raise PlanError(f"{where}: annotation {key} {keys[key]!r} is a tensor of the graph, not a parameter ({fix})")
        if name not in quant_meta:
            raise PlanError(f"{where}: has a quantization annotation but no mpcompile metadata ({fix})")
        annotations[name] = (keys["SCALE_TENSOR"], keys["ZERO_POINT_TENSOR"])
    stale = sorted(set(quant_meta) - set(annotations))
    if stale:
        raise PlanError(f"{source}: tensor {stale[0]!r}: has quantization metadata but no annotation ({fix})")
    values: dict[str, np.ndarray] = {}
    for scale_name, zp_name in annotations.values():
        for param in (scale_name, zp_name):
            try:
                values[param] = numpy_helper.to_array(params[param])
            except Exception as exc:
                raise PlanError(f"{source}: initializer {param!r} cannot be read ({_first_line(exc)}) ({fix})") from None
    # The parameter initializers are annotations, not data: drop them before building the graph.
    param_names = set(values)
    kept = [init for init in model.graph.initializer if init.name not in param_names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.quantization_annotation[:]
    weights = _lift_weights(model, source)
    try:
        check_allowing_unknown_rank(model)
    except onnx.checker.ValidationError as exc:
        raise PlanError(f"{source}: the ONNX checker rejected the plan's graph: {_first_line(exc)} ({fix})") from None
    check_runtime_opset(model, source)
    graph = proto_to_graph(model, weights)
    for key in (_META_FORMAT, _META_QUANT, _META_PRECISION, _META_GRAPH):
        graph.metadata.pop(key, None)
    graph.metadata.update(graph_meta)
    for tensor_name, (scale_name, zp_name) in annotations.items():
        where = f"{source}: tensor {tensor_name!r}"
        tensor = graph.tensors.get(tensor_name)
        if tensor is None:
            raise PlanError(f"{where}: quantization annotation for unknown tensor ({fix})")
        info = quant_meta[tensor_name]
        schema.check(schema.Annotation, {
            "entry": info, "scale": values[scale_name], "zero_point": values[zp_name], "scale_name": scale_name,
            "zero_point_name": zp_name, "dtype": tensor.dtype, "shape": tensor.shape, "constant": tensor.is_constant,
        }, where, fix=fix, error=PlanError)
        if tensor.is_constant and tensor.value.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(tensor.value)))
            if bad:
                raise PlanError(f"{where}: {bad} of its {tensor.value.size} values are NaN or infinite ({fix})")
        try:
            tensor.quant = QuantSpec(info.qtype, values[scale_name], values[zp_name], info.axis, info.symmetric,
                                     info.narrow_range, info.provenance)
        except PlanError as exc:
            raise PlanError(f"{where}: {exc} ({fix})") from None
    by_name = {n.name: n for n in graph.nodes}
    for node_name, entry in precision_meta.items():
        if node_name not in by_name:
            raise PlanError(f"{source}: node {node_name!r}: precision recorded for a node the plan does not have ({fix})")
        by_name[node_name].precision = entry.precision
        by_name[node_name].precision_reason = entry.reason
    return graph


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_graph(path: str | os.PathLike) -> Graph:
    """An ONNX file as a graph, as it is: no checks, no folding, no annotations (for artifacts)."""
    return proto_to_graph(_read_model_proto(path))


def model_hash(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def plan_hash(graph: Graph) -> str:
    """A content hash of the plan (graph + annotations), stable across saves."""
    import hashlib

    # The weights are hashed where they lie rather than copied into a protobuf first (MiniLM: 0.46 s → ~0.15 s).
    weights = _weights_out_of_protobuf(graph)
    digest = hashlib.sha256(to_onnx(graph, annotations=True, in_memory=frozenset(weights)).SerializeToString(deterministic=True))
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(memoryview(weights[name]).cast("B"))
    return digest.hexdigest()
