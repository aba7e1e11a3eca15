"""The zoo of real pretrained models (models/zoo): the recipe table (fast) and, for every entry,
mpcompile's int8 compile with conformance on each backend and the task metric of FP32 and of
each artifact (slow).

The slow tests build the zoo once per session into ``$MPCOMPILE_ZOO_CACHE`` (default
``~/.cache/mpcompile/zoo``; an already built, hash-valid entry is reused), compile each model
for every backend in one ``mpcompile.compile`` call (each backend is lowered on its own, so one
backend's failure never hides another's outcome), assert that the ONNX Runtime, TFLite and
OpenVINO artifacts (OpenVINO where it is installed) compile, run and conform, or are a known
non-conformance with the failure localized, and write every figure to
``$MPCOMPILE_ZOO_RESULTS`` (default ``<cache>/results/test_zoo.json``; a run of some entries
updates their rows).

Needs: torch==2.13.0 and transformers (the ``models`` extra), pillow, scipy, ai-edge-litert, openvino,
and ``espeak-ng`` (Debian: ``apt-get install -y espeak-ng``) for the speech entries; entries
whose tools are missing are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from models import zoo
from models.zoo._common import espeak_available

ENTRIES = zoo.entries()
NAMES = [e.name for e in ENTRIES]
#: every backend each entry is compiled for; OpenVINO where it is installed (the ``openvino`` extra)
BACKENDS = ("onnxruntime", "tflite") + (("openvino",) if importlib.util.find_spec("openvino") else ())

#: Entries whose ONNX Runtime artifact is known not to conform on today's main, with the failure
#: seen. They run and record everything; the conformance assertion is an expected failure, so a
#: fix shows up as XPASS.
KNOWN_ORT_NONCONFORMANCE: dict[str, str] = {
    # Measured on the artifact itself: ORT_ENABLE_BASIC gives the same outputs as ORT_DISABLE_ALL,
    # ORT_ENABLE_EXTENDED/ALL (QDQ fusion into QLinear* kernels) differ by up to 254-255 LSB (rec,
    # softmax output) and 211 LSB (det, sigmoid output); the first diverging tensors are QDQ Conv
    # outputs in the SVTR neck (rec) and the DB head (det). The same class as DESIGN.md's ORT
    # optimizer bug (microsoft/onnxruntime#24711): conformance catching a backend bug.
    "ppocr_rec": "ORT's EXTENDED graph optimizations change the int8 QDQ result (exact at ORT_ENABLE_BASIC)",
    "ppocr_det": "ORT's EXTENDED graph optimizations change the int8 QDQ result (exact at ORT_ENABLE_BASIC)",
    # Measured: the uniform int8 plan moves to ~7 dB under a 1e-6 nudge of its own scales; ORT's fused
    # MatMul+Add rounds 2 LSB off it at layer.0/intermediate/dense/Add_output_0 and that cascades, so the
    # float embedding misses its rule (SQNR ~20 dB < 30) and the integer certificate names the tensor.
    "minilm": "fused ORT kernels round 2 LSB off the uniform int8 plan in the first encoder layer; it cascades",
}

#: Entries whose OpenVINO artifact is known not to conform, with the failure seen and where it was localized
#: (plugins/mpcompile_openvino/README.md). Same use as KNOWN_ORT_NONCONFORMANCE.
KNOWN_OPENVINO_NONCONFORMANCE: dict[str, str] = {
    # Measured per layer (20 samples): OpenVINO's integer kernels requantize by multiplying with a float
    # reciprocal; the reference divides after a float32 convolution. A few values per million land within float
    # error of a tie and come out 1 LSB apart (ppocr_cls relu_3: 1 of 276480; ddddocr Conv '877': 6 of 2.08M),
    # inside the 1 LSB tolerance. A consumer on a much finer scale multiplies that step: a Clip(0, 6) at 6/255
    # behind a BatchNorm at 0.11 (ppocr_cls Clip@1: 1 input LSB is up to 4.7 output LSB), a Sigmoid at 1/256 behind a Conv at 0.213 (ddddocr
    # '506': 1 input LSB is up to 13.6 output LSB > 9), and the SiLU products then cascade. Not a rounding-rule
    # difference (exact ties are legalized) and no expression of the plan changes float error.
    "ppocr_cls": "1 LSB near-ties of OpenVINO's reciprocal requantization, amplified by finer-scale Clip/HardSwish consumers",
    "ddddocr_det": "1 LSB near-ties of OpenVINO's reciprocal requantization, amplified by Sigmoid (1/256) behind a coarse Conv",
    # Measured (20 samples): 99.9 % of the three sigmoid outputs exact, max 13/4/8 LSB (tolerance 9) on a handful of
    # values; the first tensor beyond 1 LSB is conv1d_20 (2 LSB) behind inputs within 1 LSB; 3 samples show no
    # tensor beyond 1 LSB. The same rare near-tie class, through Sigmoid outputs at 1/256.
    # Measured per layer (20 samples): the first tensor beyond tolerance is the HardSwish's Clip(x + 3, 0, 6) at 6/255
    # ('p2o.Clip.1', 11 LSB), behind tensors within 1 LSB: the ppocr_cls class; 424 of 428 tensors then cascade.
    "picodet_layout": "1 LSB near-ties of OpenVINO's reciprocal requantization, amplified by HardSwish Clips at 6/255; cascades",
    "basic_pitch": "rare 1 LSB near-ties of OpenVINO's reciprocal requantization, amplified at its Sigmoid outputs (13 LSB > 9)",
    # Measured in the zoo run (not localized per layer yet): 255 LSB at the sigmoid output, as ORT's 211; the DB
    # head's backbone is the HardSwish family of ppocr_cls and picodet_layout.
    "ppocr_det": "255 LSB at the sigmoid output (not localized yet; the HardSwish family of ppocr_cls/picodet)",
    # Measured in the zoo run: embedding SQNR 10.5 dB < 30; the plan itself moves to 7.2 dB under a 1e-6 nudge.
    "minilm": "the uniform int8 plan moves under a 1e-6 nudge of its own scales, as on ORT and TFLite",
}

#: (backend, entry) pairs known to give no artifact, with the reason measured. The compile must still say why (the
#: reason is in the manifest); the test records everything and is an expected failure.
KNOWN_NO_ARTIFACT: dict[tuple[str, str], str] = {
    # The calibration pages are 320x448, the evaluation pages 352x512: the input's spatial dims stay dynamic (frozen
    # only where all the data agrees), and TFLite needs static spatial sizes: refused with that reason per Conv.
    ("tflite", "ppocr_det"): "calibration and evaluation data differ in size, so the spatial dims stay dynamic",
}

#: Entries whose TFLite artifact is known not to conform, with the failure seen. Like the ORT dict: they
#: run and record everything, the conformance assertion is an expected failure (a fix shows as XPASS).
#: Localized with per-layer conformance under XNNPACK (intermediates exposed as model outputs): the first
#: differences are single near-tie roundings (values within ~1e-5 LSB of .5, which float32 arithmetic
#: rounds either way: the reference and TFLite each disagree with exact integer arithmetic there), then
#: fine-scaled outputs downstream (SiLU's sigmoid, hard-swish's Add+Clip) multiply one LSB by 3-14.
KNOWN_TFLITE_NONCONFORMANCE: dict[str, str] = {
    "ppocr_cls": "one near-tie rounding in the depthwise Conv@7 (3.6e-7 of values), amplified by hard-swish to 10 LSB > 9",
    "ddddocr_det": "near-tie roundings from the first Conv (3e-4 of values, builtin kernels) amplified by SiLU's sigmoids",
    "picodet_layout": "box outputs 10-82 LSB off (not localized yet)",
    "basic_pitch": "rare outliers at the sigmoid outputs, 15-48 LSB > 9 (not localized yet)",
    "minilm": "the uniform int8 plan moves under a 1e-6 nudge of its own scales (README of mpcompile_tflite)",
    "ppocr_rec": "255 LSB at the softmax output, as ORT's artifact shows (not localized yet)",
}

# ============================================================================ fast: the table
def test_recipe_table():
    assert len(NAMES) >= 10
    assert len(NAMES) == len(set(NAMES)), "entry names must be unique"
    families = {f for e in ENTRIES for f in e.families}
    missing = set(zoo.REQUIRED_FAMILIES) - families
    assert not missing, f"families not covered: {missing}"
    for e in ENTRIES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", e.name), e.name
        assert re.fullmatch(r"[0-9][0-9A-Za-z.]*", e.version), f"{e.name}: pin an exact version, not {e.version!r}"
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), f"{e.name}: sha256 of the wheel member"
        assert e.member and not e.member.startswith("/"), e.name
        assert callable(e.make_model) and callable(e.make_data) and callable(e.score), e.name
        assert e.metric_name and e.inputs and e.description, e.name
        for name, dims in (e.input_shapes or {}).items():
            assert isinstance(name, str) and all(isinstance(d, int) and d > 0 for d in dims), (e.name, name, dims)
    assert len({(e.package, e.member) for e in ENTRIES}) == len(ENTRIES), "two entries with the same model file"
    assert zoo.get(NAMES[0]) is ENTRIES[0]
    with pytest.raises(KeyError):
        zoo.get("no-such-model")


def test_metrics_on_known_answers():
    """The task metrics' building blocks give the textbook answers."""
    from models.zoo import _metrics as m

    assert m.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert m.f1(*m.match_counts(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[1, 1, 10, 10]]))) == pytest.approx(2 / 3)
    assert m.ctc_greedy(np.eye(4)[[[1, 1, 0, 2, 2, 0, 2, 3]]], ["", "a", "b", "c"]) == ["abbc"]
    assert m.nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], float), np.array([0.9, 0.8, 0.7]), 0.5) == [0, 2]


def test_metric_accepts_batches_or_one_dict():
    e = zoo.get("ppocr_cls")
    ev = {"labels": np.array([0, 1, 1])}
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], np.float32)
    one = e.metric({"p": probs}, ev)
    split = e.metric([{"p": probs[:2]}, {"p": probs[2:]}], ev)
    assert one == split == pytest.approx(2 / 3)


# ============================================================================ slow: compile them all
def _needs_missing(entry) -> str | None:
    if "espeak-ng" in entry.needs and espeak_available() is None:
        return "espeak-ng is not installed (apt-get update && apt-get install -y espeak-ng)"
    for mod in entry.needs:
        if mod in ("espeak-ng",):
            continue
        try:
            __import__(mod)
        except ImportError:
            return f"python module {mod!r} is not installed (pip install -e '.[zoo]')"
    return None


@pytest.fixture(scope="session")
def zoo_cache() -> Path:
    return zoo.default_cache()


@pytest.fixture(scope="session")
def zoo_built(zoo_cache):
    """Builds an entry on first use and keeps it for the session (a hash-valid build in the cache
    is reused); a missing tool is returned as a skip reason, a failed build as its exception."""
    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            entry = zoo.get(name)
            reason = _needs_missing(entry)
            if reason:
                built[name] = reason
            else:
                try:
                    built[name] = entry.build(zoo_cache)
                except Exception as exc:  # reported by that entry's test
                    built[name] = exc
        return built[name]

    return get


@pytest.fixture(scope="session")
def results(zoo_cache):
    rows: dict[str, dict] = {}
    yield rows
    path = Path(os.environ.get("MPCOMPILE_ZOO_RESULTS") or zoo_cache / "results" / "test_zoo.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {}
    if path.is_file():  # a run of some entries updates their rows and keeps the others
        try:
            merged = json.loads(path.read_text())
        except ValueError:
            merged = {}
    merged.update(rows)
    path.write_text(json.dumps(merged, indent=2, default=str))


def _run_artifact(backend: str, artifact, ev: dict, input_names: list[str], batch: int) -> list[dict]:
    from mpcompile.backends.registry import get_backend

    n = len(ev[input_names[0]])
    runner_backend = get_backend(backend)
    with runner_backend.runner(artifact, runner_backend.options()) as runner:
        return [runner.run({k: ev[k][i:i + batch] for k in input_names}) for i in range(0, n, batch)]


def compile_all(built, out_dir: Path) -> dict[str, dict]:
    """One mpcompile.compile call for every backend; what happened to each, as JSON-able dicts."""
    import mpcompile

    ev = dict(np.load(built.eval_path))
    t0 = time.perf_counter()
    res = mpcompile.compile(
        str(built.model_path), data=str(built.calib_path), backends=list(BACKENDS), eval_data=str(built.eval_path),
        conform=True, input_shapes=built.input_shapes, progress=False, out_dir=str(out_dir),
    )
    seconds = round(time.perf_counter() - t0, 2)
    manifest = res.manifest
    reports = {b.backend: b for b in res.conformance.backends} if res.conformance is not None else {}
    rows = {}
    for backend in BACKENDS:
        lowered = res.results[backend]
        if lowered.artifact is None:
            assert manifest["failed"][backend] == lowered.error  # the reason is in the manifest
            rows[backend] = {"compiled": False, "error": lowered.error[:3000], "seconds": seconds}
            continue
        rep = reports[backend]
        row = {
            "compiled": True,
            "seconds": seconds,
            "timings": {k: round(v, 2) for k, v in res.timings.items()},
            "artifact_bytes": lowered.artifact.path.stat().st_size,
            "conformance": rep.passed,
            "verdict_rule": rep.verdict_rule,
            "kernels": rep.kernels.summary() if rep.kernels is not None else None,
            "failures": rep.failures,
            "max_lsb": {k: v.max_lsb for k, v in rep.outputs.items()},
            "precision": rep.precision,
            "deviations": len(lowered.deviations),
        }
        names = [k for k in ev if k in res.plan.inputs]
        try:
            row["metric"] = built.metric(_run_artifact(backend, lowered.artifact, ev, names, built.batch_size), ev)
        except Exception as exc:
            row["metric"] = None
            row["run_error"] = f"{type(exc).__name__}: {str(exc)[:1000]}"
        rows[backend] = row
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_zoo_model(name, zoo_built, results, tmp_path):
    built = zoo_built(name)
    if isinstance(built, str):
        pytest.skip(built)
    if isinstance(built, Exception):
        results[name] = {"build_error": f"{type(built).__name__}: {built}"}
        raise built
    ev = dict(np.load(built.eval_path))
    fp32 = built.metric(zoo.run_onnx(built.model_path, ev), ev)
    row: dict = {"family": list(zoo.get(name).families), "metric_name": built.metric_name, "fp32": fp32,
                 "model_bytes": built.model_path.stat().st_size, "input_shapes": built.input_shapes}
    results[name] = row
    row.update(compile_all(built, tmp_path / "out"))
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    # Every backend that must conform is checked before any known non-conformance turns the test into an xfail.
    checked = {"onnxruntime": ("ONNX Runtime", KNOWN_ORT_NONCONFORMANCE),
               "tflite": ("TFLite", KNOWN_TFLITE_NONCONFORMANCE)}
    if "openvino" in BACKENDS:
        checked["openvino"] = ("OpenVINO", KNOWN_OPENVINO_NONCONFORMANCE)
    known = []
    for backend, (label, _) in list(checked.items()):
        got = row[backend]
        if not got["compiled"] and (backend, name) in KNOWN_NO_ARTIFACT:
            assert got["error"], f"{name}: {label} wrote no artifact and gave no reason"
            known.append(f"{label}: {KNOWN_NO_ARTIFACT[backend, name]}: {got['error'][:300]}")
            del checked[backend]
            continue
        assert got["compiled"], f"{name}: {label} compile failed: {got['error']}"
        assert got.get("metric") is not None, f"{name}: running the {label} artifact failed: {got.get('run_error')}"
    for backend, (label, known_failures) in checked.items():
        got = row[backend]
        if not got["conformance"] and name in known_failures:
            known.append(f"{label}: {known_failures[name]}: {'; '.join(got['failures'])}")
            continue
        assert got["conformance"], f"{name}: {label} artifact out of tolerance: {'; '.join(got['failures'])}"
    if known:
        pytest.xfail(" | ".join(known))
