"""``mpcompile bench`` and ``mpcompile.bench``: structure only (timings are never asserted)."""

import json
import subprocess
import sys

import pytest
from conftest import MNIST, MNIST_CALIB

from mpcompile.backends.api import Artifact
from mpcompile.backends.registry import available_backends, get_backend
from mpcompile.bench import BenchReport, Result, Subject, Timing, measure, tile_batch
from mpcompile.pipeline import compile

FAST = ["--seconds", "0.02", "--rounds", "2", "--batch", "1", "--batch", "4"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mpcompile", "bench", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def mnist_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    backends = ["onnxruntime"] + (["tflite"] if "tflite" in available_backends() else [])
    result = compile(MNIST, MNIST_CALIB, backends, out, conform=False, progress=False)
    assert not result.failures, result.failures
    return out


def test_bench_artifact_beside_fp32_model(mnist_out, tmp_path):
    artifact = mnist_out / "onnxruntime" / "mnist_cnn.qdq.onnx"
    report = tmp_path / "bench.json"
    result = run(artifact, *FAST, "--json", report)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["artifact", "backend", "size", "MiB"]
    for column in ("b1 p50 ms", "b1 p90 ms", "b1 speed ×", "b4 p50 ms", "b4 speed ×"):
        assert column in lines[0]
    assert any("mnist_cnn.qdq.onnx" in ln and "onnxruntime" in ln for ln in lines)
    assert any("mnist_cnn.onnx (FP32 baseline)" in ln for ln in lines)
    data = json.loads(report.read_text())
    assert data["batches"] == [1, 4]
    rows = {r["baseline"]: r for r in data["results"]}
    ours, fp32 = rows[False], rows[True]
    assert ours["backend"] == fp32["backend"] == "onnxruntime"
    assert 0 < ours["size_vs_baseline"] < 1  # int8 weights
    for batch in ("1", "4"):
        timing = ours["batches"][batch]
        assert timing["p50_ms"] > 0 and timing["p90_ms"] >= timing["p50_ms"] and timing["runs"] >= 2
        assert timing["speedup_p50"] > 0 and len(timing["speedup_range"]) == 2
    warned = any(ln.startswith("warning:") for ln in lines)
    slower = any(ours["batches"][b]["speedup_p50"] < 1 for b in ("1", "4"))
    assert warned == slower  # the warning follows the measured ratio, whatever it is on this machine


def test_bench_output_folder_times_every_backend(mnist_out):
    result = run(mnist_out, *FAST, "--batch", "1")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" in result.stdout
    if "tflite" in available_backends():  # its FP32 baseline is compiled with --precision fp32 for tflite
        assert any("tflite" in ln and "FP32 baseline" in ln for ln in result.stdout.splitlines()), result.stdout


@pytest.mark.skipif("tflite" not in available_backends(), reason="tflite backend unavailable")
def test_bench_tflite_with_given_baseline(mnist_out, tmp_path):
    fp32 = compile(MNIST, None, ["tflite"], tmp_path / "fp32", conform=False, progress=False, precision="fp32")
    baseline = fp32.artifacts["tflite"].path
    result = run(mnist_out / "tflite" / "mnist_cnn.tflite", "--baseline", baseline, *FAST)
    assert result.returncode == 0, result.stderr
    rows = [ln for ln in result.stdout.splitlines() if "tflite" in ln and not ln.startswith("warning:")]
    assert len(rows) == 2 and any("(FP32 baseline)" in ln for ln in rows)


@pytest.mark.parametrize("what", ["missing-artifact", "missing-baseline", "folder-without-manifest", "unknown-suffix"])
def test_bench_bad_input_exits_2(mnist_out, tmp_path, what):
    artifact = mnist_out / "onnxruntime" / "mnist_cnn.qdq.onnx"
    args = {
        "missing-artifact": [tmp_path / "nope.onnx"],
        "missing-baseline": [artifact, "--baseline", tmp_path / "nope.onnx"],
        "folder-without-manifest": [tmp_path],
        "unknown-suffix": [(tmp_path / "x.bin").resolve()],
    }[what]
    if what == "unknown-suffix":
        (tmp_path / "x.bin").write_bytes(b"\0")
    result = run(*args, *FAST)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr


def test_bench_is_listed_in_help():
    result = subprocess.run([sys.executable, "-m", "mpcompile", "--help"], capture_output=True, text=True)
    assert "bench" in result.stdout
    result = run("--help")
    assert result.returncode == 0 and "--baseline" in result.stdout and "--batch" in result.stdout


# ---------------------------------------------------------------------------- the library, on synthetic timings
def _subject(label, baseline=False, note=""):
    backend = get_backend("onnxruntime")
    return Subject(label, Artifact("onnxruntime", MNIST, [MNIST]), backend, backend.options(), baseline=baseline, note=note)


def _timing(ms):
    return Timing(ms, ms * 1.2, 10, [ms * 0.9, ms * 1.1])


def test_report_warns_only_for_slower_artifacts():
    fp32 = Result(_subject("fp32.onnx", baseline=True), {1: _timing(10.0), 32: _timing(100.0)})
    slow = Result(_subject("slow.qdq.onnx"), {1: _timing(20.0), 32: _timing(80.0)})
    fast = Result(_subject("fast.qdq.onnx"), {1: _timing(5.0), 32: _timing(50.0)})
    broken = Result(_subject("broken.onnx"), error="BackendError: cannot load")
    report = BenchReport([1, 32], [slow, fast, broken, fp32], 1.0, 2)
    text = report.format_table()
    warnings = [ln for ln in text.splitlines() if ln.startswith("warning:")]
    assert warnings == ["warning: slow.qdq.onnx is slower than FP32 on onnxruntime: 0.50× at batch 1"]
    assert "error: broken.onnx: BackendError: cannot load" in text
    comparison = next(c for c in report.comparisons() if c.result is slow)
    assert comparison.speedup(32) == pytest.approx(1.25)
    assert comparison.speedup_range(1) == pytest.approx((0.5, 0.5))  # round by round: 9/18, 11/22
    assert report.failed == [broken]
    assert json.dumps(report.to_dict())  # serializable


def test_speed_lines_say_slower_only_when_every_round_was():
    fp32 = Result(_subject("fp32.onnx", baseline=True), {1: Timing(10.0, 12.0, 10, [10.0, 10.0, 10.0])})
    slow = Result(_subject("slow.qdq.onnx"), {1: Timing(20.0, 24.0, 10, [19.0, 20.0, 21.0])})
    noisy = Result(_subject("noisy.qdq.onnx"), {1: Timing(11.0, 13.0, 10, [8.0, 11.0, 12.0])})
    fast = Result(_subject("fast.qdq.onnx"), {1: Timing(5.0, 6.0, 10, [5.0, 5.0, 6.0])})
    broken = Result(_subject("broken.onnx"), error="BackendError: cannot load")
    lines = BenchReport([1], [slow, noisy, fast, broken, fp32], 1.0, 3).speed_lines(1)
    assert lines[0].startswith("! speed: onnxruntime (mnist_cnn.onnx) is slower than FP32 on onnxruntime at batch 1: "
                               "0.50× FP32 (0.48–0.53 over 3 rounds)") and "--precision fp32" in lines[0]
    assert lines[1].endswith("about as fast as FP32 (the rounds disagree)")  # 0.91×, but one round was faster
    assert lines[2].endswith("faster than FP32")
    assert lines[3] == "onnxruntime (mnist_cnn.onnx): not timed (BackendError: cannot load)"


def test_compile_checks_speed_at_batch_1_by_default_and_not_with_bench_off(tmp_path):
    def run(*extra):
        out = tmp_path / f"out{len(extra)}"
        result = subprocess.run([sys.executable, "-m", "mpcompile", "compile", str(MNIST), "--data", str(MNIST_CALIB),
                                 "--backend", "onnxruntime", "--no-conform", "--quiet", "-o", str(out), *extra],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout, json.loads((out / "manifest.json").read_text())

    stdout, manifest = run()
    assert "speed check (batch 1, quick" in stdout and manifest["bench"]["batches"] == [1]
    line = next(ln.strip() for ln in stdout.splitlines() if ".qdq.onnx)" in ln)
    ours = next(r for r in manifest["bench"]["results"] if not r["baseline"])["batches"]["1"]
    assert line.startswith("! speed:") == (ours["speedup_range"][1] < 1), line  # said exactly when every round was slower
    stdout, manifest = run("--bench", "off")
    assert "speed check" not in stdout and "bench" not in manifest
    stdout, manifest = run("--precision", "fp32")  # nothing integer to compare
    assert "speed check" not in stdout and "bench" not in manifest


class _FakeBackend:
    """A backend whose runners call ``run(label, feeds)``: timing logic without a real runtime."""

    name = "fake"

    def __init__(self, run):
        self._run = run

    def runner(self, artifact, options):
        backend = self

        class Runner:
            def run(self, feeds, intermediates=()):
                return backend._run(artifact.path.name, feeds)

            def close(self):
                pass

        return Runner()


def _fake_measure(run, batches, rounds, **sizes):
    backend = _FakeBackend(run)
    a = Subject("a", Artifact("fake", MNIST.with_name("a"), []), backend, None, **sizes.get("a", {}))
    b = Subject("b", Artifact("fake", MNIST.with_name("b"), []), backend, None, baseline=True, **sizes.get("b", {}))
    ticks = iter(range(10**9))
    return measure([a, b], lambda n: {"x": [0] * n}, batches=batches, seconds=0.001, rounds=rounds,
                   clock=lambda: next(ticks) * 1e-3)


def test_measure_interleaves_and_counts_runs():
    calls = []
    report = _fake_measure(lambda label, feeds: calls.append(label) or {}, [1], 4)
    assert [r.error for r in report.results] == [None, None]
    assert all(r.timings[1].runs >= 4 for r in report.results)
    assert calls[-4:] == ["a", "b", "b", "a"]  # one run each per round, order reversed on odd rounds


def test_a_batch_that_fails_leaves_the_other_batches_timed_and_compared():
    def run(label, feeds):
        if len(feeds["x"]) > 1:
            raise RuntimeError("Got invalid dimensions for input: x")
        return {}

    report = _fake_measure(run, [1, 8], 2, a={"size_bytes": 1}, b={"size_bytes": 4})
    ours = report.comparisons()[0]
    assert ours.speedup(1) is not None and ours.size_ratio() == 0.25  # batch 1 still compared
    assert all(list(r.batch_errors) == [8] and r.error is None for r in report.results)
    assert "error: a: batch 8: RuntimeError: Got invalid dimensions" in report.format_table()


def test_a_fixed_batch_is_timed_at_its_own_size_with_a_note():
    from mpcompile.cli.bench_cmd import admitted_batches

    assert admitted_batches([1, 32], None) == ([1, 32], [])
    assert admitted_batches([1], 1) == ([1], [])
    timed, notes = admitted_batches([1, 32], 1)
    assert timed == [1] and "batch 32 not timed" in notes[0] and "fixed batch of 1" in notes[0]
    assert admitted_batches([32], 4)[0] == [4]


def test_tile_batch():
    import numpy as np

    x = {"x": np.arange(3)[:, None]}
    assert tile_batch(x, 7)["x"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tile_batch(x, 2)["x"][:, 0].tolist() == [0, 1]


def test_compile_bench_prints_and_records_in_the_manifest(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "mpcompile", "compile", str(MNIST), "--data", str(MNIST_CALIB), "--backend",
                             "onnxruntime", "--no-conform", "--quiet", "-o", str(out), "--bench", "1,4", "--bench-seconds", "0.02"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "(FP32 baseline)" in result.stdout and "b4 speed ×" in result.stdout
    bench = json.loads((out / "manifest.json").read_text())["bench"]
    assert bench["batches"] == [1, 4] and len(bench["results"]) == 2
    slower = any(ln.startswith("warning:") and "slower than FP32" in ln for ln in result.stdout.splitlines())
    ours = next(r for r in bench["results"] if not r.get("baseline"))
    assert slower == any(ours["batches"][b]["speedup_p50"] < 1 for b in ("1", "4"))


def test_compile_bench_bad_batches_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mpcompile", "compile", str(MNIST), "--backend", "onnxruntime", "--no-conform",
                             "-o", str(tmp_path / "out"), "--bench", "0,x"], capture_output=True, text=True)
    assert result.returncode == 2 and "--bench" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
