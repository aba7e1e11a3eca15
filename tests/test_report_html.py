"""The HTML report as a person meets it: it renders in a real (headless) browser, with no console errors."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL
from test_cli import run

BROWSER = next((b for b in ("chromium-headless-shell", "chromium", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    plan = out / "plan.onnx"
    assert run("calibrate", MNIST, "--data", MNIST_CALIB, "--samples", "64", "-o", plan, "--quiet").returncode == 0
    html = out / "conformance.html"
    result = run("conform", plan, "--backend", "onnxruntime", "--backend", "tflite", "--data", MNIST_EVAL,
                 "--samples", "64", "--per-layer", "--html", html, "--json", out / "conformance.json")
    assert result.returncode == 0, result.stdout + result.stderr
    return html


def test_the_report_holds_both_verdicts_rules_versions_and_charts(report):
    text = report.read_text()
    for fragment in ("1. Backend equals plan", "2. Plan against FP32", "rule", "LSB of scale", "onnxruntime 1.",
                     "What runs in which precision", "tensors equal as integers", "<svg", "nodes in topological order"):
        assert fragment in text, fragment
    assert "<script" not in text  # self-contained and static: opens offline, anywhere


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (apt-get install chromium-headless-shell)")
def test_the_report_renders_in_a_headless_browser_without_console_errors(report, tmp_path):
    shot = tmp_path / "report.png"
    common = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Conformance" in dom.stdout and "<svg" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    png = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1300,2000", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert png.returncode == 0 and shot.stat().st_size > 20_000, png.stderr[-2000:]  # a page with content, not blank


def test_compile_auto_and_bench_put_the_pareto_and_latency_charts_in_the_report(tmp_path):
    """`compile --precision auto --bench`: the plans the search measured and the timings, charted in the report."""
    out = tmp_path / "out"
    result = run("compile", MNIST, "--data", MNIST_CALIB, "--eval-data", MNIST_EVAL, "--backend", "onnxruntime",
                 "--precision", "auto", "--samples", "64", "--bench", "1", "--bench-seconds", "0.05", "-o", out, "--quiet")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    text = (out / "conformance.html").read_text()
    for fragment in ("How the plan was chosen (--precision auto)", "auto search: the plans it measured",
                     "3. Latency and size", "latency (interleaved rounds, same run)", "FP32 baseline"):
        assert fragment in text, fragment
    # MNIST's uniform plan meets the budget: no sensitivity was measured, and the report says so.
    assert "promoting each group alone" in text or "the search measured no sensitivity" in text


def test_the_sensitivity_the_search_measured_is_charted_most_sensitive_first():
    import json

    from mpcompile.conformance.html import render_html
    from mpcompile.conformance.report import ConformanceReport

    report = ConformanceReport(model="m", samples=1, reference_vs_fp32={}, reference_accuracy=None, fp32_accuracy=None,
                               backends=[])
    row = {"promoted": 1, "nodes_in_float": 2, "drop": 0.004, "int8_mac_share": 0.9, "int8_weight_share": 0.9,
           "meets_budget": True}
    report.auto = {"metric": "cosine", "max_accuracy_drop": 0.01, "constraints": "onnxruntime", "chosen": row,
                   "pareto": [row], "sensitivity": [{"nodes": ["conv2", "relu2"], "macs": 10, "gain": 0.5, "score": 0.05},
                                                    {"nodes": ["fc1"], "macs": 10, "gain": 0.1, "score": 0.01}]}
    page = render_html(report)
    assert "promoting each group alone (most sensitive first)" in page and "conv2 +1" in page
    json.dumps(report.to_dict())  # what conformance.json holds stays JSON
