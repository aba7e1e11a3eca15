"""One error boundary per backend call: a plugin's fault is one line naming the backend; the others go on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from mpcompile_onnxruntime import OnnxRuntimeBackend

import mpcompile
from mpcompile.backends.api import Artifact, Runner
from mpcompile.backends.targets import Target, lower_target
from mpcompile.conformance import check_artifacts
from mpcompile.data import open_data


class _FaultyRunner(Runner):
    def __init__(self, inner: Runner, fault: str) -> None:
        self.inner, self.fault = inner, fault

    supports_intermediates = True

    def run(self, feeds, intermediates=()):
        if self.fault.startswith("plant:"):  # "plant:TENSOR:LSB": one element of one tensor off by LSB steps
            _, name, lsb = self.fault.split(":")
            got = self.inner.run(feeds, intermediates)
            if name in got:
                value = np.array(got[name], copy=True)
                value.reshape(-1)[0] += int(lsb) * self.scale
                got[name] = value
            return got
        if self.fault == "raises":
            raise RuntimeError("kernel exploded")
        got = self.inner.run(feeds, intermediates)
        if self.fault == "missing":
            return {}
        if self.fault == "wrong_shape":
            return {k: np.asarray(v)[:1] for k, v in got.items()}  # broadcastable against the reference
        if self.fault == "not_a_mapping":
            return list(got.values())
        return got


class _Faulty(OnnxRuntimeBackend):
    name = "faulty"

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def lower(self, plan, out_dir, *, stem, options):
        if self.fault == "lower_raises":
            raise ZeroDivisionError("oops")
        if self.fault == "lower_none":
            return None
        if self.fault == "outside":
            stray = Path(out_dir).parent.parent / "stray.onnx"
            stray.write_bytes(b"x")
            return Artifact(self.name, stray, [stray])
        return super().lower(plan, out_dir, stem=stem, options=options)

    def runner(self, artifact, options):
        if self.fault == "runner_raises":
            raise OSError("device lost")
        return _FaultyRunner(super().runner(artifact, options), self.fault)


@pytest.fixture(scope="module")
def plan():
    return mpcompile.calibrate(str(MNIST), str(MNIST_CALIB), samples=64, progress=False).plan


@pytest.mark.parametrize("fault, message", [
    ("lower_raises", "failed while lowering (a bug in the backend, please report it): ZeroDivisionError: oops"),
    ("lower_none", "returned NoneType from lower(), not an Artifact"),
    ("outside", "outside its output folder"),
])
def test_lowering_faults_become_the_backends_error(plan, tmp_path, fault, message, monkeypatch):
    monkeypatch.delenv("MPCOMPILE_STRICT_PLUGINS", raising=False)
    backend = _Faulty(fault)
    (tmp_path / "stage").mkdir()
    result = lower_target(Target(backend, backend.options()), plan, tmp_path / "stage", "m")
    assert result.artifact is None and "'faulty'" in result.error and message in result.error
    assert not (tmp_path / "stage" / "faulty").exists()


@pytest.mark.parametrize("fault, message", [
    ("runner_raises", "failed while opening its runner"),
    ("raises", "failed while running its artifact (a bug in the backend, please report it): RuntimeError: kernel exploded"),
    ("missing", "its runner returned no output 'logits'"),
    ("wrong_shape", "tensor 'logits' has shape (1, 10), the plan's has"),
    ("not_a_mapping", "returned list, not a mapping"),
])
def test_runner_faults_are_errors_naming_the_backend_not_disagreements(plan, tmp_path, fault, message, monkeypatch):
    monkeypatch.delenv("MPCOMPILE_STRICT_PLUGINS", raising=False)
    faulty, good = _Faulty(fault), OnnxRuntimeBackend()
    targets = {"faulty": Target(faulty, faulty.options()), "onnxruntime": Target(good, good.options())}
    (tmp_path / "stage").mkdir()
    lowered = {name: lower_target(t, plan, tmp_path / "stage", "m") for name, t in targets.items()}
    report = check_artifacts(plan, lowered, targets, open_data(plan, str(MNIST_EVAL)), samples=64)
    by_name = {b.backend: b for b in report.backends}
    assert not by_name["faulty"].passed and message in by_name["faulty"].error and "'faulty'" in by_name["faulty"].error
    assert by_name["onnxruntime"].passed, report.format_text()
    assert not report.passed


@pytest.mark.parametrize("lsb", [1, 2])
def test_a_planted_error_in_an_internal_tensor_is_caught_and_named(plan, tmp_path, lsb):
    internal = [t for t in plan.quantized_tensors() if not t.is_constant and t.name not in plan.outputs
                and t.name not in plan.inputs and t.quant.axis is None]
    target_tensor = internal[len(internal) // 2]
    backend = _Faulty(f"plant:{target_tensor.name}:{lsb}")
    original = backend.runner

    def runner(artifact, options):
        r = original(artifact, options)
        r.scale = float(target_tensor.quant.scale)
        return r

    backend.runner = runner
    target = Target(backend, backend.options())
    (tmp_path / "stage").mkdir()
    lowered = {"faulty": lower_target(target, plan, tmp_path / "stage", "m")}
    report = check_artifacts(plan, lowered, {"faulty": target}, open_data(plan, str(MNIST_EVAL)), samples=64, per_layer=True)
    faulty = report.backends[0]
    assert faulty.inexact_tensors[0] == target_tensor.name
    assert f"first not exact: {target_tensor.name!r}" in report.format_text()
    if lsb == 1:  # within the default tolerance: still PASS, but the certificate shows it
        assert faulty.integer_certificate["within_tolerance"] >= 1
    else:
        assert not report.passed and faulty.first_divergence == target_tensor.name


def test_an_empty_output_is_reported_not_a_crash():
    """A quantized output with no values (an empty tensor) prints as such; the text report used to raise TypeError."""
    from mpcompile.conformance.report import BackendReport, ConformanceReport
    from mpcompile.reference.metrics import Accumulator

    acc = Accumulator(scale=0.1, tolerance_lsb=1)
    acc.update(np.zeros((0, 3)), np.zeros((0, 3)))
    report = ConformanceReport("m", 0, {"y": acc}, None, None, [BackendReport("onnxruntime", "x", outputs={"y": acc})])
    assert "no values to compare" in report.format_text()
