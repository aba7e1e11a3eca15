"""The public plugin API: everything a backend needs from mpcompile, in one module.

Built-in backends import nothing else from the core (a contract in ``pyproject.toml`` checks
it in CI), so a third-party backend written against this module has what they have::

    from mpcompile.backends.api import Artifact, Backend, BackendOptions, Capabilities, Field, Runner, op_table

What is here, by role:

* the contract: ``Backend``, ``BackendOptions`` (+ pydantic's ``Field``), ``Capabilities``,
  ``op_table``, ``Deviation``, ``Artifact``, ``Runner``;
* per-layer cost: ``LayerProfile`` (what ``Runner.profile`` returns), ``Layer``, ``attribute`` (a backend's
  executed layers and their times given to plan nodes, Q/DQ included), ``per_run``, ``ProfilingUnavailable``;
* shared mechanisms: ``legalize_with_capabilities`` (the default legalization),
  ``QDQWriter`` (writes Q/DQ into a copy of a plan), ``OnnxFileRunner`` (runs an ONNX
  artifact in ONNX Runtime, intermediates included), ``InferPrecisions`` (node precisions of a
  QDQ import);
* the IR and its numerics: ``Graph``, ``Node``, ``Tensor``, ``Dim``, ``QuantSpec``,
  ``spec_from_range``, ``weight_spec``, ``Precision``, ``QType``, ``ops`` (the op taxonomy),
  ``fixed_output_spec``, ``bias_spec``, ``refresh_bias_specs``, ``serde`` (ONNX files,
  ``write_atomic``);
* the reference: ``ReferenceRunner``, ``FakeQuantGraph``, ``onnx_evaluator`` (onnx.reference with the
  contract's Q/DQ, a pure-Python runner for any ONNX file);
* data: ``open_data`` (any data source the CLI accepts, validated against a graph's inputs);
* errors: ``MpcompileError`` and the user-error subclasses (exit code 2), ``InternalError``.
"""

from __future__ import annotations

from pydantic import Field

from mpcompile.backends.base import Artifact, Backend, Runner
from mpcompile.backends.capabilities import ALL_PRECISIONS, FLOAT_ONLY, Capabilities, Deviation, op_table
from mpcompile.backends.cpu import uint8_weights
from mpcompile.backends.legalize import legalize_with_capabilities
from mpcompile.backends.onnx_runner import OnnxFileRunner
from mpcompile.backends.options import BackendOptionError, BackendOptions
from mpcompile.backends.profile import Layer, LayerProfile, ProfilingUnavailable, attribute, per_run
from mpcompile.backends.qdq import QDQWriter, uint8_storage
from mpcompile.data import open_data
from mpcompile.errors import (
    BackendError,
    BackendUnavailableError,
    DataError,
    InternalError,
    MpcompileError,
    PlanError,
    UnsupportedOperatorError,
)
from mpcompile.ir import ops, serde
from mpcompile.ir.graph import Dim, Graph, Node, Tensor
from mpcompile.ir.numerics import bias_spec, fixed_output_spec, refresh_bias_specs
from mpcompile.ir.quant import QuantSpec, spec_from_range, weight_spec
from mpcompile.ir.types import Precision, QType
from mpcompile.passes.infer_precisions import InferPrecisions
from mpcompile.reference import FakeQuantGraph, ReferenceRunner
from mpcompile.reference.onnx_reference import evaluator as onnx_evaluator

__all__ = [
    "ALL_PRECISIONS",
    "FLOAT_ONLY",
    "Artifact",
    "Backend",
    "BackendError",
    "BackendOptionError",
    "BackendOptions",
    "BackendUnavailableError",
    "Capabilities",
    "DataError",
    "Deviation",
    "Dim",
    "FakeQuantGraph",
    "Field",
    "Graph",
    "InferPrecisions",
    "InternalError",
    "Layer",
    "LayerProfile",
    "MpcompileError",
    "Node",
    "OnnxFileRunner",
    "PlanError",
    "ProfilingUnavailable",
    "Precision",
    "QDQWriter",
    "QType",
    "QuantSpec",
    "ReferenceRunner",
    "Runner",
    "Tensor",
    "UnsupportedOperatorError",
    "attribute",
    "bias_spec",
    "fixed_output_spec",
    "legalize_with_capabilities",
    "onnx_evaluator",
    "op_table",
    "open_data",
    "ops",
    "per_run",
    "refresh_bias_specs",
    "serde",
    "spec_from_range",
    "weight_spec",
    "uint8_storage",
    "uint8_weights",
]
