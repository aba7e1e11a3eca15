"""``conform --localize``: bisection over sub-models names the tensor a backend computes wrongly.

The backend under test is the real ONNX Runtime backend with a planted bug in its lowering
(one QuantizeLinear scale 1.5x off its DequantizeLinear), so every sub-model it lowers carries
the bug exactly where the real one would.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from planted import planted_target

from mpcompile.backends.registry import resolve_targets
from mpcompile.conformance.localize import localize, prefix_plan, region_plan
from mpcompile.data import open_data
from mpcompile.ir import serde
from mpcompile.pipeline import calibrate, conform

VICTIM = "/pool1/MaxPool_output_0"


@pytest.fixture(scope="module")
def mnist():
    plan = calibrate(MNIST, MNIST_CALIB, progress=False, samples=200).plan
    batches = list(open_data(plan, str(MNIST_EVAL)).batches(16, limit=32))
    return plan, batches


def test_planted_bug_is_localized_in_few_runs(mnist, tmp_path):
    plan, batches = mnist
    target = planted_target(VICTIM)
    legal, _ = target.backend.legalize(plan, target.options)
    found = localize(target, legal, legal.outputs[0], batches, work=tmp_path / "work", reproducer_dir=tmp_path / "repro")
    assert found.tensor == VICTIM, found.lines()
    assert found.op == "MaxPool"
    assert found.max_lsb > found.tolerance_lsb
    assert found.runs <= 2 * math.log2(len(legal.nodes)), (found.runs, len(legal.nodes))
    assert all(found.frontier), found.frontier
    # The worst element's integers differ, and both values are printed.
    assert found.worst["backend_q"] != found.worst["reference_q"]
    text = "\n".join(found.lines())
    assert VICTIM in text and "reproducer" in text
    # The reproducer is the region alone (a few nodes), with its inputs, and it reproduces.
    assert found.reproduces is True
    region = serde.load_plan(found.reproducer)
    assert region.outputs == [VICTIM] and len(region.nodes) < len(legal.nodes)
    inputs = np.load(tmp_path / "repro" / "reproducer.inputs.npz")
    assert sorted(inputs.files) == sorted(region.inputs)


def test_healthy_backend_localizes_nothing_wrong(mnist, tmp_path):
    """On the real backend the last quantized tensor agrees: the search says so and stops after one run."""
    plan, batches = mnist
    target = resolve_targets(["onnxruntime"])[0][0]
    legal, _ = target.backend.legalize(plan, target.options)
    found = localize(target, legal, legal.outputs[0], batches, work=tmp_path)
    assert found.tensor is None and found.runs == 1
    assert "agrees" in found.note


def test_sub_models_are_prefixes_and_regions(mnist):
    plan, _ = mnist
    prefix = prefix_plan(plan, [VICTIM])
    assert prefix.outputs == [VICTIM] and prefix.inputs == plan.inputs
    assert [n.name for n in prefix.nodes] == [n.name for n in plan.nodes[: len(prefix.nodes)]]
    producer = plan.producers()[VICTIM]
    region = region_plan(plan, VICTIM, set(producer.inputs))
    assert [n.name for n in region.nodes] == [producer.name]
    assert region.inputs == [i for i in producer.inputs if not plan.tensors[i].is_constant]


def test_conform_localize_through_the_pipeline(tmp_path):
    """A passing backend is not localized; the report says nothing more and writes no reproducer."""
    report = conform(MNIST, ["onnxruntime"], MNIST_EVAL, calibration_data=MNIST_CALIB, samples=64, localize=True,
                     reproducer_dir=tmp_path / "repro")
    assert report.passed
    assert report.backends[0].localization == []
    assert not (tmp_path / "repro").exists()


def test_cli_conform_localize_and_input_shape(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mpcompile.cli.main import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["conform", str(MNIST), "--backend", "onnxruntime", "--data", str(MNIST_EVAL),
                                      "--calibration-data", str(MNIST_CALIB), "--samples", "32", "--input-shape",
                                      "input=8x1x28x28", "--batch-size", "8", "--localize", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "[PASS] onnxruntime" in result.output and "localize" not in result.output
    assert not (tmp_path / "mpcompile-reproducers").exists()
