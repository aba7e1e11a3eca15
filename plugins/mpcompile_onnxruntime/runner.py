"""Run a QDQ artifact in ONNX Runtime: the core's ONNX runner with this backend's session options.

``profile`` times each node with ORT's own profiler (``SessionOptions.enable_profiling``): its JSON
has one ``Node`` event per executed kernel and run (``<node>_kernel_time``, the duration in µs). The
nodes are those of the *optimized* graph, which the same session writes out
(``optimized_model_filepath``): QDQ fusion keeps the plan node's name on the fused kernel
(``/fc1/Gemm`` as ``QGemm``), the NHWC/NCHWc layout transformers append ``_token_<n>``
(``Conv@5_token_19`` as ``QLinearConv``) and add Transpose/Reorder nodes of their own; the core's
``attribute`` gives every one of them, and every Q/DQ the lowering wrote, to a plan node.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from mpcompile.backends.api import Artifact, Layer, LayerProfile, OnnxFileRunner, attribute, per_run, serde
from mpcompile_onnxruntime.options import OnnxRuntimeOptions

#: untimed runs before the profiled ones (the first run allocates and initialises kernels)
WARMUP = 5
KERNEL_TIME = "_kernel_time"


class OrtRunner(OnnxFileRunner):
    supports_profile = True

    def profile(self, feeds: Mapping[str, np.ndarray], repeats: int = 50,
                plan_nodes: Collection[str] | None = None) -> LayerProfile:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="mpcompile-ort-profile-") as tmp:
            options = self.session_options()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "profile")
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            for _ in range(WARMUP + repeats):
                session.run(names, dict(feeds))
            events = json.loads(Path(session.end_profiling()).read_text())
            optimized = serde.read_graph(Path(tmp) / "optimized.onnx")
        samples: dict[str, list[float]] = defaultdict(list)
        for event in events:
            name = str(event.get("name", ""))
            if event.get("cat") == "Node" and name.endswith(KERNEL_TIME):
                samples[name.removesuffix(KERNEL_TIME)].append(float(event.get("dur", 0.0)))
        times = per_run({name: values[-repeats:] for name, values in samples.items()})
        executed = [Layer(n.name, n.op_type, tuple(i for i in n.inputs if i), tuple(o for o in n.outputs if o))
                    for n in optimized.nodes]
        return attribute(executed, times, serde.read_graph(self.path), plan_nodes, backend="onnxruntime",
                         artifact=str(self.path), repeats=repeats)


def ort_runner(artifact: Artifact, options: OnnxRuntimeOptions) -> OrtRunner:
    # ORT's production session defaults (every graph optimization) unless optimize=False.
    return OrtRunner(artifact, optimize=options.optimize, threads=options.threads)
