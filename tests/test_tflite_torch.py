"""PyTorch exports of the operator families real models contain, end to end through the TFLite backend.

Two small networks exported with ``torch.onnx.export`` (the TorchScript exporter, opset 17), as
PyTorch writes them: a vision block (HardSwish, HardSigmoid, reflect and replicate padding, nearest and
bilinear upsampling with and without align_corners, F.normalize's ReduceL2/Clip/Expand/Div, a
Greater/Where mask) and a sequence model (bidirectional batch-first LSTM, GRU, Linear). The input
shapes are frozen (``input_shapes``) so that PyTorch's Shape arithmetic folds away; the artifacts are
held to the conformance rule next to ONNX Runtime's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
torch = pytest.importorskip("torch")

from test_tflite import INT16_TOLERANCE, MODES, _lower  # noqa: E402

from mpcompile.pipeline import calibrate, conform  # noqa: E402

pytestmark = pytest.mark.tflite


class Vision(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3)
        self.c3 = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):  # noqa: ANN001, ANN201
        f = torch.nn.functional
        y = torch.nn.functional.hardswish(self.c1(x))
        y = f.pad(y, (1, 1, 1, 1), mode="reflect")[:, :, 1:-1, 1:-1] * f.hardsigmoid(self.c3(y)).mean(1, keepdim=True)
        y = self.c2(f.pad(y, (1, 1, 1, 1), mode="replicate"))
        z = torch.cat([f.interpolate(y, scale_factor=2, mode="nearest"),
                       f.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True),
                       f.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False),
                       f.interpolate(y, size=(24, 24), mode="nearest")], 1)
        return f.normalize(z.mean((2, 3)), dim=1), torch.where(z > 0.1, z, 0.1 * z)


class Sequence(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(6, 8, batch_first=True, bidirectional=True)
        self.gru = torch.nn.GRU(16, 5, batch_first=True)
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        y, (h, c) = self.lstm(x)
        z, hz = self.gru(y)
        return self.fc(z), h, c, hz


MODELS = {
    "vision": (Vision, (3, 12, 12), ["n", "mask"]),
    "sequence": (Sequence, (7, 6), ["y", "h", "c", "hz"]),
}
BATCH = 8


def _export(name: str, tmp_path: Path) -> tuple[Path, Path]:
    import warnings

    cls, shape, outputs = MODELS[name]
    torch.manual_seed(0)
    model = cls().eval()
    path, data = tmp_path / f"{name}.onnx", tmp_path / f"{name}.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and RNN batch-size notes
        torch.onnx.export(model, (torch.randn(1, *shape),), str(path), opset_version=17, input_names=["x"],
                          output_names=outputs, dynamic_axes={"x": {0: "N"}}, dynamo=False)
    np.savez(data, x=np.random.default_rng(0).normal(0, 1, (32, *shape)).astype(np.float32))
    return path, data


#: fp16 vision is left out: its Greater/Where mask compares values that the plan rounds to float16 at
#: every FP16 node while TFLite's FP16 nodes compute in float32, so a value within fp16 noise of the
#: threshold can select the other branch (README, "FP16 plans and comparisons")
CASES = [("vision", m) for m in ("int8", "int16", "fp32")] + [("sequence", m) for m in sorted(MODES)]


@pytest.mark.parametrize("name,mode", CASES)
def test_pytorch_export_conforms(name, mode, tmp_path):
    path, data = _export(name, tmp_path)
    plan = calibrate(path, data, input_shapes={"x": (BATCH, *MODELS[name][1])}, progress=False, **MODES[mode]).plan
    report = conform(plan, backends=["tflite", "onnxruntime"], data=data, out_dir=tmp_path / "c", batch_size=BATCH,
                     tolerances=INT16_TOLERANCE if mode == "int16" else None)
    assert report.passed, report.format_text()
    _, _, artifact, _ = _lower(plan, tmp_path)
    assert EXPECTED[name] <= set(artifact.metadata["ops"]), artifact.metadata["ops"]


EXPECTED = {
    "vision": {"MIRROR_PAD", "GATHER", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "HARD_SWISH", "GREATER",
               "SELECT_V2", "SQRT"},
    "sequence": {"UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK", "PACK", "TANH", "LOGISTIC"},
}
