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
from mpcompile.ir.graph import Graph
from mpcompile.ir.quant import QuantSpec, spec_from_range
from mpcompile.planning.config import Override


def read_overrides(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
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
            raise PlanError(f"overrides file {path}: invalid YAML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"overrides file {path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) - {"nodes", "op_types", "tensors"}:
        raise PlanError(f"overrides file {path}: expected an object with keys nodes, op_types, tensors")
    return data


def precision_overrides(data: dict[str, Any]) -> tuple[Override, ...]:
    entries = list((data.get("op_types") or {}).items()) + list((data.get("nodes") or {}).items())
    return tuple(Override.parse(f"{pattern}={precision}") for pattern, precision in entries)


def apply_tensor_pins(plan: Graph, data: dict[str, Any], source: str = "overrides") -> None:
    """Replace the specs of pinned tensors (after planning), keeping their qtype and symmetry."""
    from mpcompile.ir.numerics import refresh_bias_specs

    for name, pin in (data.get("tensors") or {}).items():
        tensor = plan.tensors.get(name)
        if tensor is None:
            close = [t for t in plan.tensors if name.lower() in t.lower()][:5]
            raise PlanError(f"{source}: no tensor {name!r} in the model" + (f" (similar: {', '.join(close)})" if close else ""))
        spec = tensor.quant
        if spec is None:
            raise PlanError(f"{source}: tensor {name!r} is not quantized in this plan, so it cannot be pinned")
        provenance = {**dict(spec.provenance), "pinned": source}
        if not isinstance(pin, dict):
            raise PlanError(f"{source}: tensor {name!r} needs {{'range': [lo, hi]}} or {{'scale': s, 'zero_point': z}}")
        if "range" in pin:
            lo, hi = (float(v) for v in pin["range"])
            tensor.quant = spec_from_range(lo, hi, spec.qtype, symmetric=spec.symmetric, provenance=provenance)
        elif "scale" in pin:
            tensor.quant = QuantSpec(spec.qtype, np.float32(pin["scale"]), int(pin.get("zero_point", 0)), None,
                                     spec.symmetric and int(pin.get("zero_point", 0)) == 0, spec.narrow_range, provenance)
        else:
            raise PlanError(f"{source}: tensor {name!r} needs 'range' or 'scale'")
    refresh_bias_specs(plan)
