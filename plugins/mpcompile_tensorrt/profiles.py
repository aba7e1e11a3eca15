"""Optimization profiles (min/opt/max input shapes) and the ``trtexec`` command lines.

A network with a dynamic input dimension needs an optimization profile; implicit INT8
calibration on such a network also needs a *calibration* profile (one shape). Shapes come
from the ``shapes`` option, else from the batch-size options for the batch (first) axis
and from the data for other dynamic axes. Pure Python.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from mpcompile.backends.api import BackendError, Graph, Precision
from mpcompile_tensorrt.options import TensorRTOptions

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class InputProfile:
    name: str
    min: Shape
    opt: Shape
    max: Shape
    dynamic: bool

    def to_dict(self) -> dict[str, Any]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max), "dynamic": self.dynamic}


def _is_static(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _shape(value: Any, name: str, rank: int) -> Shape:
    try:
        shape = tuple(int(d) for d in value)
    except TypeError:
        raise BackendError(f"tensorrt: shape for input {name!r} must be a sequence of ints, got {value!r}") from None
    if len(shape) != rank or any(d < 1 for d in shape):
        raise BackendError(f"tensorrt: shape {shape} for input {name!r} must have {rank} positive dims")
    return shape


def input_profiles(
    plan: Graph, options: TensorRTOptions, sample_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, InputProfile]:
    """One profile per graph input; ``sample_shapes`` (one batch of data) fills non-batch dynamic dims."""
    given = dict(options.shapes or {})
    unknown = sorted(set(given) - set(plan.inputs))
    if unknown:
        raise BackendError(f"tensorrt: shapes given for {unknown}, which are not inputs of the model {plan.inputs}")
    profiles: dict[str, InputProfile] = {}
    max_batch = options.max_batch_size or options.batch_size
    for name in plan.inputs:
        declared = plan.tensors[name].shape
        if declared is None:
            raise BackendError(f"tensorrt: input {name!r} has no known rank; pass shapes={{{name!r}: ...}}")
        rank = len(declared)
        dynamic = not all(_is_static(d) for d in declared)
        if name in given:
            spec = given[name]
            if isinstance(spec, Mapping):
                missing = {"min", "opt", "max"} - set(spec)
                if missing:
                    raise BackendError(f"tensorrt: shapes[{name!r}] needs min, opt and max (missing {sorted(missing)})")
                lo, opt, hi = (_shape(spec[k], name, rank) for k in ("min", "opt", "max"))
            else:
                lo = opt = hi = _shape(spec, name, rank)
            for k, d in enumerate(declared):
                if _is_static(d) and not (lo[k] == opt[k] == hi[k] == d):
                    raise BackendError(f"tensorrt: shapes[{name!r}] dim {k} must be {d} (fixed by the model)")
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise BackendError(f"tensorrt: shapes[{name!r}] needs min ≤ opt ≤ max in every dim")
            profiles[name] = InputProfile(name, lo, opt, hi, dynamic)
            continue
        mins, opts, maxs = [], [], []
        sample = tuple(sample_shapes[name]) if sample_shapes and name in sample_shapes else None
        for k, d in enumerate(declared):
            if _is_static(d):
                mins.append(d), opts.append(d), maxs.append(d)
            elif k == 0:
                mins.append(options.min_batch_size), opts.append(options.batch_size), maxs.append(max_batch)
            elif sample is not None and len(sample) == rank:
                mins.append(sample[k]), opts.append(sample[k]), maxs.append(sample[k])
            else:
                raise BackendError(
                    f"tensorrt: input {name!r} has a dynamic dim {k} ({d!r}); pass shapes={{{name!r}: "
                    f"{{'min': ..., 'opt': ..., 'max': ...}}}} or calibration_data to take it from"
                )
        profiles[name] = InputProfile(name, tuple(mins), tuple(opts), tuple(maxs), dynamic)
    return profiles


def any_dynamic(profiles: Mapping[str, InputProfile]) -> bool:
    return any(p.dynamic for p in profiles.values())


# ============================================================================ trtexec
def _quoted_name(name: str) -> str:
    # trtexec splits specs on ',' and ':'; such names are wrapped in single quotes.
    return f"'{name}'" if ("," in name or ":" in name) else name


def shape_spec(profiles: Mapping[str, InputProfile], which: str) -> str:
    return ",".join(f"{_quoted_name(p.name)}:{'x'.join(str(d) for d in getattr(p, which))}" for p in profiles.values())


def _shape_args(profiles: Mapping[str, InputProfile], calibration: bool = False) -> list[str]:
    if not any_dynamic(profiles):
        return []
    args = [f"--{w}Shapes={shape_spec(profiles, w)}" for w in ("min", "opt", "max")]
    if calibration:
        args.append(f"--optShapesCalib={shape_spec(profiles, 'opt')}")
    return args


def layer_precisions(plan: Graph) -> dict[str, str]:
    """Implicit INT8: nodes planned in float, for ``--layerPrecisions`` (TensorRT layers carry ONNX node names)."""
    names = {Precision.FP32: "fp32", Precision.FP16: "fp16", Precision.BF16: "bf16"}
    return {n.name: names[n.precision] for n in plan.nodes if n.precision in names}


def trtexec_commands(
    plan: Graph,
    profiles: Mapping[str, InputProfile],
    files: Mapping[str, str],
    options: TensorRTOptions,
) -> dict[str, str]:
    """The ``trtexec`` command lines that build the engine from the written files (run in their folder)."""
    engine = files["engine"]
    workspace = f"--memPoolSize=workspace:{max(1, options.workspace >> 20)}"
    explicit = ["trtexec", f"--onnx={files['qdq_onnx']}", "--stronglyTyped", *_shape_args(profiles), workspace, f"--saveEngine={engine}"]
    precisions = {n.precision for n in plan.nodes if n.precision is not None}
    integer = any(p.is_integer for p in precisions)
    implicit = ["trtexec", f"--onnx={files['float_onnx']}"]
    if integer:
        implicit.append("--int8")
    if Precision.FP16 in precisions:
        implicit.append("--fp16")
    if Precision.BF16 in precisions:
        implicit.append("--bf16")
    if integer:
        implicit.append(f"--calib={files['calibration_cache']}")
    constraints = layer_precisions(plan) if integer or len(precisions) > 1 else {}
    if constraints:
        implicit += [
            "--precisionConstraints=prefer",
            "--layerPrecisions=" + ",".join(f"{_quoted_name(k)}:{v}" for k, v in constraints.items()),
        ]
    implicit += [*_shape_args(profiles, calibration=integer), workspace, f"--saveEngine={engine}"]
    return {
        "10.x explicit": shlex.join(explicit),
        "10.x implicit": shlex.join(implicit),
        "11.x": shlex.join(explicit),
    }
