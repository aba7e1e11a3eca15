"""OpenVINO backend: lowers a plan to OpenVINO IR (``.xml``/``.bin``) and runs it with OpenVINO.

Built the way a third party builds a backend: it imports only ``mpcompile.backends.api`` and
registers through the ``mpcompile.backends`` entry-point group (``openvino =
"mpcompile_openvino:backend"``). The room: ``options.py`` (``OpenVINOOptions``), ``legalize.py``
(OpenVINO's measured rules on top of the shared legalization), ``lowering.py`` (QDQ ONNX via the
shared ``QDQWriter`` → ``openvino.convert_model`` → ``openvino.save_model``), ``runner.py``
(``openvino.Core().compile_model``, intermediates through added outputs), plus ``inspect.py``
(reads the IR back and holds its FakeQuantize/weights to the plan). ``openvino`` is imported
only inside ``check_available``, ``lower`` and ``runner``. The measured facts behind the
capabilities are in ``README.md`` beside this file.
"""

from __future__ import annotations

from pathlib import Path

from mpcompile.backends.api import (
    Artifact,
    Backend,
    BackendUnavailableError,
    Capabilities,
    Deviation,
    Graph,
    Precision,
    QType,
    Runner,
    op_table,
    ops,
)
from mpcompile_openvino.options import OpenVINOOptions

#: float precisions the plan may keep, per inference_precision_hint (legalize.py moves the rest)
FLOAT_PRECISIONS = {
    "f32": frozenset({Precision.FP32, Precision.FP16}),
    "bf16": frozenset({Precision.BF16}),
    "f16": frozenset({Precision.FP16}),
}


class OpenVINOBackend(Backend):
    name = "openvino"
    description = "OpenVINO IR (.xml/.bin) with FakeQuantize at the plan's scales; int8 kernels on the CPU plugin"
    install_hint = "pip install 'mpcompile[openvino]'   (openvino>=2025.0)"
    artifact_suffix = ".xml"
    Options = OpenVINOOptions

    def capabilities_for(self, hint: str = "f32") -> Capabilities:
        # Measured here (OpenVINO 2026.4, CPU plugin; README.md): int8/uint8 activations, asymmetric
        # (zero-points with zp − qmin even: legalize.py), per-channel int8 weights. No 16-bit integer
        # kernels (16-bit Q/DQ are stripped to float): INT16 nodes run in FP32.
        return Capabilities(
            ops=op_table([(ops.INTEGER_OPS, {Precision.INT8, Precision.FP32}), (ops.FLOAT_ONLY_REASONS, {Precision.FP32})]),
            per_channel_weights=True,
            symmetric_activations_only=False,
            activation_qtypes=frozenset({QType.INT8, QType.UINT8}),
            float_precisions=FLOAT_PRECISIONS[hint] | ({Precision.FP32} if hint == "f32" else frozenset()),
            # An int8 MatMul with no FakeQuantize after it keeps its integer kernel, dequantized on the way out.
            float_output_ops=frozenset({"MatMul"}),
            notes=(
                "int8 activations: zero-points with zp - qmin odd move by one step (OpenVINO rounds half to even "
                "after adding the zero-point)",
                "INT16 runs in FP32 (no 16-bit integer kernels: 16-bit Q/DQ pairs are stripped)",
                "float nodes run in inference_precision_hint (f32 default); FP16 nodes store FP16 weights",
            ),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self.capabilities_for("f32")

    def check_available(self) -> None:
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError(f"the openvino backend needs OpenVINO ({exc}); install it with: "
                                          f"{self.install_hint}") from None

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("openvino")
        except PackageNotFoundError:
            return "unknown"

    def legalize(self, plan: Graph, options: OpenVINOOptions) -> tuple[Graph, list[Deviation]]:
        from mpcompile_openvino.legalize import legalize_for_openvino

        hint = options.inference_precision_hint
        return legalize_for_openvino(plan, self.capabilities_for(hint), hint)

    def lower(self, plan: Graph, out_dir: Path, *, stem: str, options: OpenVINOOptions) -> Artifact:
        from mpcompile_openvino.lowering import write_ir

        self.check_available()
        return write_ir(plan, out_dir, stem, options, self.version())

    def runner(self, artifact: Artifact, options: OpenVINOOptions) -> Runner:
        from mpcompile_openvino.runner import OpenVINORunner

        self.check_available()
        return OpenVINORunner(artifact, options)


backend = OpenVINOBackend()

__all__ = ["OpenVINOBackend", "OpenVINOOptions", "backend"]
