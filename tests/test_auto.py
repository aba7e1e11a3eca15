"""Mixed precision: automatic planner and sensitivity analysis on real and generated models."""

import resource
import time

import numpy as np
import onnx
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from onnx import TensorProto, helper, numpy_helper

from mpcompile.ir import serde
from mpcompile.ir.types import Precision
from mpcompile.pipeline import calibrate, open_data
from mpcompile.planning.sensitivity import local_sensitivity


def test_mnist_auto_within_budget_and_deterministic(tmp_path):
    budget = 0.005
    plans = []
    for run in range(2):
        result = calibrate(MNIST, MNIST_CALIB, precision="auto", metric="top1", max_accuracy_drop=budget,
                           eval_data=MNIST_EVAL, progress=False)
        assert result.auto.chosen.drop <= budget
        path = serde.save_plan(result.plan, tmp_path / f"plan{run}.onnx")
        plans.append(path.read_bytes())
    assert plans[0] == plans[1]  # identical plan files


def test_auto_promotes_sensitive_layers_when_budget_is_tight(tmp_path):
    """A budget of 0 forces promotions; the chosen plan then matches FP32 top-1 exactly, most MACs stay INT8 if possible."""
    result = calibrate(MNIST, MNIST_CALIB, precision="auto", metric="cosine", max_accuracy_drop=1e-5,
                       eval_data=MNIST_EVAL, samples=200, progress=False)
    chosen = result.auto.chosen
    assert chosen.drop <= 1e-5
    promoted = [n for n in result.plan.nodes if n.precision in (Precision.FP16, Precision.FP32)]
    assert len(promoted) == chosen.promoted
    assert all("auto:" in n.precision_reason for n in promoted)
    assert [r.promoted for r in result.auto.rows] == sorted(r.promoted for r in result.auto.rows)


def _deep_mlp(layers: int, dim: int = 32) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.normal(0, 1 / np.sqrt(dim), (dim, dim))).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", dim])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sensitivity_scales_to_hundreds_of_layers(tmp_path):
    path = tmp_path / "deep.onnx"
    onnx.save(_deep_mlp(60), path)  # 120 layers
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32))
    plan = calibrate(path, data, progress=False).plan
    started = time.perf_counter()
    layers = local_sensitivity(plan, open_data(plan, data), samples=32)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"sensitivity of {len(layers)} layers: {seconds:.2f}s, process peak RSS {peak_mb:.0f} MB")
    assert len(layers) == 120
    assert all(np.isfinite(s.sqnr_db) or s.sqnr_db == float("inf") for s in layers)


def test_sensitivity_cli(tmp_path):
    from click.testing import CliRunner

    from mpcompile.cli.main import cli

    out = CliRunner().invoke(cli, ["sensitivity", str(MNIST), "--data", str(MNIST_CALIB), "--quiet",
                                   "--html", str(tmp_path / "s.html"), "--json", str(tmp_path / "s.json")])
    assert out.exit_code == 0, out.output
    assert "/fc2/Gemm" in out.output
    assert (tmp_path / "s.html").read_text().startswith("<!doctype html>")
