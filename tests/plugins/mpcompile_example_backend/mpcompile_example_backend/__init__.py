"""A third-party backend, packaged and registered exactly as an outside author would.

It lowers a plan to a self-contained fake-quant ONNX file and runs it with
``onnx.reference.ReferenceEvaluator`` (pure Python): slow, but exact, and a complete
example of the plugin contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from mpcompile.backends.api import (
    Artifact,
    Backend,
    BackendOptions,
    Capabilities,
    FakeQuantGraph,
    Graph,
    Precision,
    Runner,
    onnx_evaluator,
    op_table,
    serde,
)


class ReferenceEvaluatorRunner(Runner):
    def __init__(self, path: Path) -> None:
        self._evaluator = onnx_evaluator(str(path))

    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        names = list(self._evaluator.output_names)
        return dict(zip(names, self._evaluator.run(None, dict(feeds))))


class OnnxReferenceBackend(Backend):
    name = "onnx-reference"
    description = "fake-quant ONNX evaluated by onnx.reference (example third-party plugin)"
    install_hint = "pip install onnx"

    @property
    def capabilities(self) -> Capabilities:
        ops = ["Conv", "Gemm", "MatMul", "Relu", "MaxPool", "Flatten", "Reshape", "Add", "GlobalAveragePool", "Softmax"]
        return Capabilities(
            ops=op_table([(ops, {Precision.INT8, Precision.FP32})]),
            float_precisions=frozenset({Precision.FP32}),
        )

    def check_available(self) -> None:
        import onnx.reference  # noqa: F401 - the only library this backend needs

    def version(self) -> str:
        import onnx

        return onnx.__version__

    def lower(self, plan: Graph, out_dir: Path, *, stem: str, options: BackendOptions) -> Artifact:
        path = Path(out_dir) / f"{stem}.fakequant.onnx"
        serde.save_onnx(FakeQuantGraph(plan).graph, path)
        return Artifact(self.name, path, [path], metadata={"onnx": self.version()})

    def runner(self, artifact: Artifact, options: BackendOptions) -> Runner:
        return ReferenceEvaluatorRunner(artifact.path)


backend = OnnxReferenceBackend()
