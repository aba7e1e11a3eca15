"""The OpenVINO backend, built as a third party would: entry point, options, lazy import, IR with the plan's
numbers, conformance on MNIST and on every generated case, and a planted IR bug caught and named.

The backend's entry point is not in the installed metadata of the shared environment, so these tests
instantiate ``mpcompile_openvino.backend`` directly and drive it through the core's error boundary
(``Target``/``lower_target``) and conformance (``check_artifacts``), as ``tests/test_backend_boundary.py`` does.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL, ROOT

import mpcompile
from mpcompile.backends.api import BackendError, BackendOptionError, BackendUnavailableError, Precision, QType
from mpcompile.backends.cpu import exact_u8s8
from mpcompile.backends.options import describe
from mpcompile.backends.targets import Target, lower_target
from mpcompile.conformance import check_artifacts
from mpcompile.data import open_data
from mpcompile.testing.cases import CASES, random_inputs
from mpcompile.testing.testsuite import MODES

ov = pytest.importorskip("openvino", reason="the openvino backend needs OpenVINO (pip install 'mpcompile[openvino]')")

from mpcompile_openvino import OpenVINOBackend, backend  # noqa: E402
from mpcompile_openvino.inspect import check_fake_quantize, expected_ranges, runtime_precisions  # noqa: E402
from mpcompile_openvino.legalize import even_zero_point  # noqa: E402


def _lower(plan, tmp_path, **options):
    target = Target(backend, backend.options(options))
    stage = tmp_path / "stage"
    stage.mkdir(exist_ok=True)
    result = lower_target(target, plan, stage, "m")
    assert result.error is None, result.error
    return target, result


def _conform(plan, target, result, data, **kwargs):
    return check_artifacts(plan, {"openvino": result}, {"openvino": target}, open_data(plan, str(data)), **kwargs)


@pytest.fixture(scope="module")
def mnist_plan():
    return mpcompile.calibrate(str(MNIST), str(MNIST_CALIB), progress=False).plan


# ============================================================================ a plugin like any other
def test_pyproject_declares_the_entry_point_extra_and_contracts():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["mpcompile.backends"]["openvino"] == "mpcompile_openvino:backend"
    assert any(req.startswith("openvino>=2025") for req in project["project"]["optional-dependencies"]["openvino"])
    contracts = {c["name"]: c for c in project["tool"]["importlinter"]["contracts"]}
    assert "mpcompile_openvino" in project["tool"]["importlinter"]["root_packages"]
    assert "mpcompile_openvino" in contracts["built-in backends import only the public plugin API"]["source_modules"]
    assert "mpcompile_openvino" in contracts["backends are independent of each other"]["modules"]
    assert backend.install_hint.startswith("pip install 'mpcompile[openvino]'")


def test_importing_the_plugin_does_not_import_openvino():
    code = "import sys, mpcompile_openvino as m; m.backend.capabilities; m.backend.options(); print('openvino' in sys.modules)"
    env_path = f"{ROOT}:{ROOT / 'plugins'}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": env_path,
                         "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.strip() == "False"


def test_without_openvino_the_backend_is_unavailable_with_the_install_hint(monkeypatch, mnist_plan, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'mpcompile\[openvino\]'"):
        backend.check_available()
    target = Target(backend, backend.options())
    (tmp_path / "stage").mkdir()
    result = lower_target(target, mnist_plan, tmp_path / "stage", "m")
    assert result.artifact is None and "mpcompile[openvino]" in result.error
    assert not (tmp_path / "stage" / "openvino").exists()


def test_options_are_typed_listed_and_refused_by_name():
    rows = {r["name"]: r for r in describe(backend.Options)}
    assert {"device", "inference_precision_hint", "num_streams", "num_threads", "compress_to_fp16"} <= set(rows)
    assert rows["device"]["default"] == "CPU" and rows["inference_precision_hint"]["default"] == "f32"
    assert rows["inference_precision_hint"]["type"] == "'f32' | 'bf16' | 'f16'"
    opts = backend.options({"num_threads": "2", "compress_to_fp16": "true", "inference_precision_hint": "bf16"})
    assert (opts.num_threads, opts.compress_to_fp16, opts.inference_precision_hint) == (2, True, "bf16")
    with pytest.raises(BackendOptionError, match="'openvino' has no option 'streams'.*num_streams"):
        backend.options({"streams": 2})
    with pytest.raises(BackendOptionError, match="inference_precision_hint='fp64'"):
        backend.options({"inference_precision_hint": "fp64"})


# ============================================================================ the IR carries the plan
def test_mnist_ir_has_the_plans_fakequantize_ranges_and_integer_weights(mnist_plan, tmp_path):
    _, result = _lower(mnist_plan, tmp_path, weights="int8")  # auto stores uint8 on CPUs without VNNI
    artifact, legal = result.artifact, result.plan
    assert artifact.path.suffix == ".xml" and artifact.path.with_suffix(".bin").is_file()
    model = ov.Core().read_model(str(artifact.path))
    assert check_fake_quantize(model, legal, artifact.metadata["tensor_map"]) == []
    producers = {n: op for op in model.get_ops() for o in op.outputs() for n in o.get_names()}
    checked = 0
    for t in legal.quantized_tensors():
        if t.is_constant:
            continue
        fq = producers[artifact.metadata["tensor_map"][t.name]]
        assert fq.get_type_name() == "FakeQuantize" and fq.get_levels() == 256
        lo, hi = expected_ranges(t.quant)
        il, ih = lo, hi
        if t.name in legal.inputs:  # the exact input quantizer hands the FakeQuantize integer steps
            il, ih = (np.float32(q - int(t.quant.zero_point)) for q in (t.quant.qtype.qmin, t.quant.qtype.qmax))
        ranges = [np.asarray(fq.input_value(i).get_node().get_data()).reshape(-1)[0] for i in range(1, 5)]
        assert [r.view(np.uint32) for r in ranges[2:]] == [v.view(np.uint32) for v in (lo, hi)], t.name
        assert np.allclose(ranges[:2], (il, ih), rtol=1e-6, atol=0), t.name  # OpenVINO folds the Mul(s) in float32
        checked += 1
    assert checked == len([t for t in legal.quantized_tensors() if not t.is_constant]) >= 8
    weight = producers["conv2.weight"]  # Multiply(Convert(Constant<i8>), per-channel scale)
    stored = weight.input_value(0).get_node().input_value(0).get_node()
    assert stored.get_element_type().get_type_name() == "i8"
    spec = legal.tensors["conv2.weight"].quant
    assert spec.axis == 0 and np.array_equal(np.asarray(stored.get_data()), spec.quantize(legal.tensors["conv2.weight"].value))
    scales = np.asarray(weight.input_value(1).get_node().get_data()).reshape(-1)
    assert np.array_equal(scales.view(np.uint32), spec.scale.view(np.uint32))


def test_mnist_runs_integer_kernels_reaches_accuracy_and_conforms_per_layer(mnist_plan, tmp_path):
    """Integer kernels where this CPU runs them exactly (VNNI); without VNNI, uint8 weights (float kernels), exact."""
    target, result = _lower(mnist_plan, tmp_path)
    assert result.deviations == []  # MNIST's plan needs no change on OpenVINO
    report = _conform(mnist_plan, target, result, MNIST_EVAL, per_layer=True)
    assert report.passed, report.format_text()
    ov_report = report.backends[0]
    assert ov_report.accuracy >= 0.967
    assert ov_report.outputs["logits"].max_lsb == 0
    assert all(acc.max_lsb <= 1 for acc in ov_report.per_layer.values() if acc.quantized)
    with backend.runner(result.artifact, target.options) as runner:
        compiled, _, _ = runner.compiled()
        kinds = runtime_precisions(compiled)
    if not exact_u8s8():
        assert result.artifact.metadata["weights"].startswith("uint8") and result.artifact.metadata["speed_warning"]
        return
    convs = [v for v in kinds.values() if v.startswith("Convolution")]
    fcs = [v for v in kinds.values() if v.startswith("FullyConnected")]
    assert len(convs) == 2 and all(v.endswith(("u8", "i8")) for v in convs), kinds
    assert fcs and all(v.endswith(("u8", "i8")) for v in fcs), kinds


def test_intermediates_come_back_under_the_plans_names(mnist_plan, tmp_path):
    target, result = _lower(mnist_plan, tmp_path)
    feeds = {"input": np.load(MNIST_EVAL)["input"][:4]}
    with backend.runner(result.artifact, target.options) as runner:
        plain = runner.run(feeds)
        deep = runner.run(feeds, ["/pool1/MaxPool_output_0", "/relu3/Relu_output_0", "not_a_tensor"])
    assert set(plain) == {"logits"} and set(deep) == {"logits", "/pool1/MaxPool_output_0", "/relu3/Relu_output_0"}
    assert deep["/pool1/MaxPool_output_0"].shape == (4, 16, 14, 14) or deep["/pool1/MaxPool_output_0"].shape[0] == 4
    np.testing.assert_array_equal(plain["logits"], deep["logits"])


def test_a_planted_range_bug_in_the_ir_is_caught_and_named(mnist_plan, tmp_path):
    target, result = _lower(mnist_plan, tmp_path)
    model = ov.Core().read_model(str(result.artifact.path))
    victim = "/pool1/MaxPool_output_0"
    producers = {n: op for op in model.get_ops() for o in op.outputs() for n in o.get_names()}
    fq = producers[result.artifact.metadata["tensor_map"][victim]]
    high = fq.input_value(4).get_node()  # output_high: the dequantized values come out 1.5x too large
    from openvino import op

    wider = op.Constant(np.asarray(high.get_data()) * np.float32(1.5))
    fq.input(4).replace_source_output(wider.output(0))
    bad = result.artifact.path.parent / "bad.xml"
    ov.save_model(model, str(bad), compress_to_fp16=False)
    problems = check_fake_quantize(ov.Core().read_model(str(bad)), result.plan, result.artifact.metadata["tensor_map"])
    assert len(problems) == 1 and victim in problems[0] and "output_high" in problems[0], problems
    result.artifact.path, result.artifact.files = bad, [bad, bad.with_suffix(".bin")]
    report = _conform(mnist_plan, target, result, MNIST_EVAL, per_layer=True, samples=200)
    assert not report.passed
    assert report.backends[0].first_divergence == victim, report.format_text()


def test_an_unknown_device_is_the_backends_error(mnist_plan, tmp_path):
    _, result = _lower(mnist_plan, tmp_path)
    with pytest.raises(BackendError, match="no device 'NPU9'"):
        backend.runner(result.artifact, backend.options({"device": "NPU9"}))


# ============================================================================ legalization
def test_odd_zero_points_move_one_step_and_even_ones_stay():
    from mpcompile.backends.api import QuantSpec

    for qtype, zp, want in [(QType.INT8, 5, 4), (QType.INT8, -7, -6), (QType.INT8, 127, 126), (QType.INT8, -128, None),
                            (QType.INT8, 4, None), (QType.UINT8, 37, 38), (QType.UINT8, 128, None), (QType.UINT8, 0, None),
                            (QType.UINT8, 255, 254), (QType.UINT8, 1, 2)]:
        assert even_zero_point(QuantSpec(qtype, np.float32(0.1), zp)) == want, (qtype, zp)


def test_legalization_records_each_measured_rule(tmp_path):
    path = tmp_path / "mlp.onnx"
    model = CASES["residual_mlp"]()
    onnx.save(model, path)
    data = tmp_path / "mlp.npz"
    np.savez(data, **random_inputs(model, 24, seed=3))
    plan = mpcompile.calibrate(path, data, progress=False).plan
    odd = [t for t in plan.quantized_tensors() if not t.is_constant and (int(t.quant.zero_point) + 128) % 2]
    legal, deviations = backend.legalize(plan, backend.options())
    moved = {d.subject for d in deviations if "zero-point" in d.change}
    assert moved == {t.name for t in odd} and all((int(legal.tensors[n].quant.zero_point) + 128) % 2 == 0 for n in moved)
    assert all(legal.tensors[n].quant.scale == plan.tensors[n].quant.scale for n in moved)

    int16 = mpcompile.calibrate(path, data, progress=False, precision="int16").plan
    legal, deviations = backend.legalize(int16, backend.options())
    assert {n.precision for n in legal.nodes if n.precision} == {Precision.FP32}
    assert any("no 16-bit integer kernels" in d.reason for d in deviations)

    bf16 = mpcompile.calibrate(path, data, progress=False, precision="bf16").plan
    legal, deviations = backend.legalize(bf16, backend.options())
    assert {n.precision for n in legal.nodes if n.precision} == {Precision.FP32}
    assert all("inference_precision_hint=bf16" in d.reason for d in deviations if d.kind == "node")
    legal, deviations = backend.legalize(bf16, backend.options({"inference_precision_hint": "bf16"}))
    assert {n.precision for n in legal.nodes if n.precision} == {Precision.BF16} and not deviations

    mixed = mpcompile.calibrate(path, data, progress=False, keep=["mm2=fp32"]).plan
    legal, deviations = backend.legalize(mixed, backend.options({"inference_precision_hint": "bf16"}))
    assert legal.node("mm2").precision == Precision.BF16
    assert any(d.subject == "mm2" and d.change == "fp32 → bf16" for d in deviations)


def test_capabilities_state_the_measured_facts():
    caps = OpenVINOBackend().capabilities
    assert caps.per_channel_weights and not caps.symmetric_activations_only
    assert caps.activation_qtypes == frozenset({QType.INT8, QType.UINT8})
    assert not caps.supports("Conv", Precision.INT16) and caps.supports("Conv", Precision.INT8)
    assert caps.float_precisions == frozenset({Precision.FP32, Precision.FP16})
    assert OpenVINOBackend().capabilities_for("bf16").float_precisions == frozenset({Precision.BF16})


# ============================================================================ conformance
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_generated_case_conforms_in_every_mode(case, mode, tmp_path):
    """The conformance suite's cases × modes (mpcompile.testing.testsuite), run on this backend object."""
    path = tmp_path / f"{case}.onnx"
    model = CASES[case]()
    onnx.save(model, path)
    data = path.with_suffix(".npz")
    np.savez(data, **random_inputs(model, 24, seed=3))
    plan = mpcompile.calibrate(path, data, progress=False, **MODES[mode]).plan
    target, result = _lower(plan, tmp_path)
    report = _conform(plan, target, result, data, batch_size=8, per_layer=True)
    assert report.passed, report.format_text()
    for name, acc in report.backends[0].outputs.items():
        if acc.quantized:
            assert acc.max_lsb <= 1, (name, acc.max_lsb)


def test_fp16_and_bf16_plans_on_mnist(tmp_path):
    fp16 = mpcompile.calibrate(str(MNIST), str(MNIST_CALIB), progress=False, samples=64, precision="fp16").plan
    (tmp_path / "fp16").mkdir()
    target, result = _lower(fp16, tmp_path / "fp16")
    assert result.deviations == [] and result.artifact.metadata["ops"].get("Constant<f16>", 0) == 4  # the 4 weights
    report = _conform(fp16, target, result, MNIST_EVAL, samples=200)
    assert report.passed, report.format_text()

    bf16 = mpcompile.calibrate(str(MNIST), str(MNIST_CALIB), progress=False, samples=64, precision="bf16").plan
    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" not in caps:
        pytest.skip(f"this CPU has no BF16 ({caps})")
    (tmp_path / "bf16").mkdir()
    target, result = _lower(bf16, tmp_path / "bf16", inference_precision_hint="bf16")
    report = _conform(bf16, target, result, MNIST_EVAL, samples=200)
    assert report.passed, report.format_text()
    assert report.backends[0].accuracy >= 0.97
