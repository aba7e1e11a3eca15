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

#: Entries whose ONNX Runtime artifact is known not to conform, with the failure seen. They run and record
#: everything; the conformance assertion is an expected failure, so a fix shows up as XPASS. Empty since the
#: kernel rule (conformance/kernels.py): ppocr_rec, ppocr_det and minilm leave tolerance end to end (255, 250 LSB;
#: the float embedding's rule) but every quantized tensor is within tolerance from the plan's exact inputs and the
#: plan itself moves beyond each output's rule under a 1e-6 nudge of its scales: tie rounding amplified by the plan.
KNOWN_ORT_NONCONFORMANCE: dict[str, str] = {}

#: Entries whose OpenVINO artifact is known not to conform (plugins/mpcompile_openvino/README.md). Same use. Empty
#: since the IR check accepts an unfused Q/DQ pair: ddddocr_det's cut plan was refused ("tensor '467' is produced by
#: Multiply, not FakeQuantize"), so it had no kernel certificate; it now passes by the kernel rule (29 LSB end to end,
#: every quantized tensor within 1 LSB from exact inputs, the plan's nudge moves the output 25 LSB).
KNOWN_OPENVINO_NONCONFORMANCE: dict[str, str] = {}

#: (backend, entry) pairs known to give no artifact, with the reason measured. The compile must still say why (the
#: reason is in the manifest); the test records everything and is an expected failure.
KNOWN_NO_ARTIFACT: dict[tuple[str, str], str] = {
    # Empty since TFLite writes dynamic spatial dims (shape_signature -1, sizes computed by LiteRT when the runner
    # resizes the inputs): ppocr_det, calibrated at 320x448 and evaluated at 352x512, now gets one artifact.
}

#: Entries whose TFLite artifact is known not to conform, with the failure seen. Same use as the ORT dict.
KNOWN_TFLITE_NONCONFORMANCE: dict[str, str] = {
    # Empty. basic_pitch was the last: 18 LSB > 9 at a sigmoid output with every kernel within tolerance; the rounding
    # envelope now nudges the scales both ways (9 LSB up, 16 down), and the log-domain rule (planning/logdomain.py)
    # then kept its CQT front-end in float, after which it conforms end to end.
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
