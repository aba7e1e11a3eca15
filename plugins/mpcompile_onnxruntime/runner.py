"""Run a QDQ artifact with ONNX Runtime: production defaults, or every graph optimization off."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mpcompile.backends.base import Artifact, Runner
from mpcompile.errors import BackendError
from mpcompile.ir import serde


class OnnxRuntimeRunner(Runner):
    supports_intermediates = True

    def __init__(self, artifact: Artifact, *, optimize: bool = True) -> None:
        self.artifact = artifact
        self.optimize = optimize
        self.tensor_map: dict[str, str] = dict(artifact.metadata.get("tensor_map", {}))
        self._session = None
        self._outputs: list[str] = []
        self._exposed: tuple[str, ...] | None = None

    def _session_for(self, intermediates: tuple[str, ...]):  # noqa: ANN202
        if self._session is not None and self._exposed == intermediates:
            return self._session
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        graph = serde.read_graph(self.artifact.path)
        self._outputs = list(graph.outputs)
        payload: str | bytes = str(self.artifact.path)
        if intermediates:
            wanted = [self.tensor_map.get(n, n) for n in intermediates]
            graph.outputs = self._outputs + [w for w in dict.fromkeys(wanted) if w not in self._outputs]
            for w in wanted:
                graph.tensors[w].shape = None  # let ORT infer; never reject an output over a stale shape
            payload = serde.onnx_bytes(graph)
        try:
            self._session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BackendError(f"ONNX Runtime could not load {self.artifact.path}: {str(exc).splitlines()[0]}") from None
        self._exposed = intermediates
        return self._session

    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        inter = tuple(intermediates)
        session = self._session_for(inter)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, dict(feeds))))
        result = {n: values[n] for n in self._outputs}
        for name in inter:
            key = self.tensor_map.get(name, name)
            if key in values:
                result[name] = values[key]
        return result

    def close(self) -> None:
        self._session = None
