"""ONNX Runtime sessions: the one place mpcompile creates them.

Calibration, the fake-quant reference, sensitivity and the ONNX runner all run graphs in
ONNX Runtime (CPU provider). IR graphs are handed over without serializing the weights:
a protobuf would copy every weight twice more (into the message, into the bytes) and ORT
would parse them back, so the large initializers go in as numpy-backed ``OrtValue``s.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from mpcompile.errors import MpcompileError
from mpcompile.execution import worker_threads
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph

PROVIDERS = ["CPUExecutionProvider"]


def session_options(*, optimize: bool = True, threads: int | None = None, spinning: bool = True) -> Any:
    """``SessionOptions`` with ORT's own graph optimizations on (production) or off (exact numbers).

    ``threads`` (intra-op) defaults to ORT's own choice, or in an executor's worker process to
    that worker's share of the cores (``mpcompile.execution.worker_threads``). ``spinning=False``
    makes ORT's idle intra-op threads sleep instead of spin-waiting: for a caller that computes
    in a thread of its own while ORT runs (calibration's observers), which spinning threads
    would otherwise take cores from.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: ORT's error lines repeat the exception mpcompile reports
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is None:
        threads = worker_threads()  # in a worker of mpcompile.execution: its share of the cores
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def inference_session(graph: Graph, options: Any = None) -> Any:
    """An ``onnxruntime.InferenceSession`` running ``graph``. ORT's own errors propagate."""
    import onnxruntime as ort

    options = options if options is not None else session_options()
    payload, weights = serde.onnx_bytes_and_weights(graph)
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in weights.values()]
    if values:
        options.add_external_initializers(list(weights), values)
    session = ort.InferenceSession(payload, options, providers=PROVIDERS)
    # ORT reads the initializers in place: they must live as long as the session does.
    session._mpcompile_weights = (weights, values)
    return session


def file_session(path: str | os.PathLike, options: Any = None) -> Any:
    """A session on a model file as written (the artifact itself, not a re-serialization)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), options if options is not None else session_options(), providers=PROVIDERS)


def exposing(graph: Graph, outputs: Iterable[str]) -> Graph:
    """A copy of ``graph`` whose outputs also include ``outputs`` (any tensor names)."""
    exposed = graph.copy()
    extra = [o for o in dict.fromkeys(outputs) if o not in exposed.outputs]
    exposed.outputs = list(exposed.outputs) + extra
    for name in extra:
        exposed.tensors[name].shape = None  # let ORT infer; a stale inferred shape must not make it reject the output
    return exposed


def make_session(graph: Graph, outputs: Iterable[str] = (), *, optimize: bool = True, threads: int | None = None,
                 spinning: bool = True) -> Any:
    """A session on ``graph`` exposing ``outputs`` too; ORT's refusal becomes a user error naming the model."""
    try:
        options = session_options(optimize=optimize, threads=threads, spinning=spinning)
        return inference_session(exposing(graph, outputs), options)
    except Exception as exc:
        raise MpcompileError(f"ONNX Runtime cannot run model {graph.name!r}: {str(exc).splitlines()[0]}") from None
