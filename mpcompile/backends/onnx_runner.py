"""Run an ONNX artifact in ONNX Runtime, optionally exposing named IR tensors.

Shared by every backend whose artifact (or CPU check of it) is an ONNX file: the ORT
backend's QDQ model, TensorRT's TensorRT-ready QDQ ONNX. ``Artifact.metadata["tensor_map"]``
maps IR tensor names to the artifact's tensor names for per-layer comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.backends.base import Artifact, Runner
from mpcompile.errors import BackendError
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.ortsession import exposing, file_session, inference_session, session_options


class OnnxFileRunner(Runner):
    supports_intermediates = True

    def __init__(self, artifact: Artifact, *, path: Path | None = None, optimize: bool = True,
                 threads: int | None = None) -> None:
        self.artifact = artifact
        self.path = Path(path or artifact.path)
        self.optimize = optimize
        self.threads = threads
        self.tensor_map: dict[str, str] = dict(artifact.metadata.get("tensor_map", {}))
        self._session = None
        self._outputs: list[str] = []
        self._exposed: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ hooks for subclasses
    def graph_variants(self, graph: Graph) -> Iterable[Graph]:
        """Graphs to try, in order, until ONNX Runtime accepts one (default: the artifact as written)."""
        yield graph

    def accepted(self, index: int) -> None:
        """Called with the index of the variant ONNX Runtime accepted."""

    def session_options(self) -> Any:
        """A fresh ``onnxruntime.SessionOptions`` as this runner's sessions use (a subclass may add to it: profiling)."""
        return session_options(optimize=self.optimize, threads=self.threads)

    # ------------------------------------------------------------------ running
    def _session_for(self, intermediates: tuple[str, ...]):  # noqa: ANN202
        if self._session is not None and self._exposed == intermediates:
            return self._session
        options = self.session_options()
        graph = serde.read_graph(self.path)
        self._outputs = list(graph.outputs)
        if intermediates:
            graph = exposing(graph, [w for w in (self.tensor_map.get(n, n) for n in intermediates) if w in graph.tensors])
        error = ""
        for index, variant in enumerate(self.graph_variants(graph)):
            unchanged = variant is graph and not intermediates
            try:
                if unchanged:
                    self._session = file_session(self.path, options)
                else:
                    self._session = inference_session(variant, options)
            except Exception as exc:
                error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                continue
            self.accepted(index)
            self._exposed = intermediates
            return self._session
        raise BackendError(f"ONNX Runtime could not load {self.path}: {error}")

    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        inter = tuple(intermediates)
        session = self._session_for(inter)
        names = [o.name for o in session.get_outputs()]
        try:
            values = dict(zip(names, session.run(names, dict(feeds))))
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed on {self.path.name}: {str(exc).splitlines()[0]}") from None
        result = {n: values[n] for n in self._outputs}
        for name in inter:
            key = self.tensor_map.get(name, name)
            if key in values:
                result[name] = values[key]
        return result

    def close(self) -> None:
        self._session = None
