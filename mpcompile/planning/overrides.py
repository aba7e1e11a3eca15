"""A plan-overrides file: precisions per node, per op type, and pinned numbers per tensor.

JSON, or YAML when PyYAML is installed::

    {
      "nodes":    {"/encoder/layer.0/*": "fp16", "fc2": "fp32"},   # name or glob -> precision
      "op_types": {"Softmax": "fp32"},
      "tensors":  {"logits": {"range": [-8.0, 8.0]},               # re-derive the spec from this range
                   "input":  {"scale": 0.0078125, "zero_point": 0}} # or pin the numbers exactly
    }

Node and op-type entries become the same ``Override``s as ``--keep``; tensor entries are
applied after calibration and planning. Unknown nodes, op types and tensors are errors
that name them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.errors import PlanError
from mpcompile.ir import schema
from mpcompile.ir.graph import Graph
from mpcompile.ir.quant import QuantSpec, spec_from_range
from mpcompile.planning.config import Override


def read_overrides(path: str | os.PathLike) -> dict[str, Any]:
    """The overrides file at ``path``, validated against ``schema.OverridesFile`` (one-line ``PlanError`` otherwise).

    Returns plain data: ``{"nodes": {...}, "op_types": {...}, "tensors": {name: {"range": (lo, hi)} or
    {"scale": s, "zero_point": z}}}``, each section present only if given.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise PlanError(f"{path}: not a text file (write the overrides as JSON or YAML)") from None
    except OSError as exc:
        raise PlanError(f"overrides file {path}: {exc.strerror or exc}") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise PlanError(f"overrides file {path} is YAML: pip install pyyaml, or write it as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"overrides file {path}: invalid YAML{_yaml_where(exc)} (fix the YAML syntax)") from None
        except RecursionError:
            raise PlanError(f"overrides file {path}: invalid YAML: nested too deeply (fix the YAML syntax)") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"overrides file {path}: invalid JSON ({exc}) (fix the JSON syntax)") from None
        except RecursionError:
            raise PlanError(f"overrides file {path}: invalid JSON: nested too deeply (fix the JSON syntax)") from None
    if not isinstance(data, dict):
        raise PlanError(f"overrides file {path}: expected an object with keys nodes, op_types, tensors, got "
                        f"{schema.kind_of(data)} ({schema.OVERRIDES_FIX['']})")
    unknown = sorted(str(k) for k in data if k not in ("nodes", "op_types", "tensors"))
    if unknown:
        raise PlanError(f"overrides file {path}: unknown key {unknown[0]!r}; expected an object with keys nodes, "
                        f"op_types, tensors ({schema.OVERRIDES_FIX['']})")
    parsed = schema.check(schema.OverridesFile, data, f"overrides file {path}", fix=schema.OVERRIDES_FIX, error=PlanError)
    return parsed.model_dump(exclude_none=True)


def _yaml_where(exc: Exception) -> str:
    """A YAML error on one line: ``at line L, column C: problem``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if not problem:
        text = str(exc).strip()
        problem = text.splitlines()[0] if text else type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}"


def _validated(data: dict[str, Any], source: str) -> schema.OverridesFile:
    """Overrides given as data (the Python API) pass the same schema as a file's."""
    if isinstance(data, schema.OverridesFile):
        return data
    return schema.check(schema.OverridesFile, data, source, fix=schema.OVERRIDES_FIX, error=PlanError)


def precision_overrides(data: dict[str, Any], source: str = "overrides") -> tuple[Override, ...]:
    parsed = _validated(data, source)
    entries = list((parsed.op_types or {}).items()) + list((parsed.nodes or {}).items())
    return tuple(Override(pattern.strip(), precision) for pattern, precision in entries)


def check_tensor_names(graph: Graph, data: dict[str, Any], source: str = "overrides") -> None:
    """Every pinned tensor exists in ``graph``: checkable right after import, before calibration."""
    for name in (_validated(data, source).tensors or {}):
        if name not in graph.tensors:
            close = [t for t in graph.tensors if name.lower() in t.lower()][:5]
            raise PlanError(f"{source}: no tensor {name!r} in the model" + (f" (similar: {', '.join(close)})" if close else ""))


def apply_tensor_pins(plan: Graph, data: dict[str, Any], source: str = "overrides") -> None:
    """Replace the specs of pinned tensors (after planning), keeping their qtype and symmetry."""
    from mpcompile.ir.numerics import refresh_bias_specs

    check_tensor_names(plan, data, source)
    for name, pin in (_validated(data, source).tensors or {}).items():
        tensor = plan.tensors[name]
        spec = tensor.quant
        if spec is None:
            raise PlanError(f"{source}: tensor {name!r} is not quantized in this plan, so it cannot be pinned "
                            "(pin a quantized tensor; `mpcompile inspect PLAN` lists them)")
        provenance = {**dict(spec.provenance), "pinned": source}
        qtype = spec.qtype
        try:
            if pin.range is not None:
                lo, hi = pin.range
                tensor.quant = spec_from_range(lo, hi, qtype, symmetric=spec.symmetric, provenance=provenance)
            else:
                zero_point = 0 if pin.zero_point is None else pin.zero_point
                if not qtype.qmin <= zero_point <= qtype.qmax:
                    raise PlanError(f"zero_point {zero_point} is outside the {qtype.value} range [{qtype.qmin}, {qtype.qmax}] "
                                    f"(give a zero-point in [{qtype.qmin}, {qtype.qmax}])")
                tensor.quant = QuantSpec(qtype, np.float32(pin.scale), zero_point, None,
                                         spec.symmetric and zero_point == 0, spec.narrow_range, provenance)
        except PlanError as exc:
            text = str(exc)
            raise PlanError(f"{source}: tensor {name!r}: {text}" + ("" if text.endswith(")") else
                                                                   " (pin numbers the tensor's qtype can hold)")) from None
    refresh_bias_specs(plan)
