"""The zoo benchmark: for every real model in ``models/zoo``, FP32 vs mpcompile's default int8
plan (ONNX Runtime artifact, and the TFLite and OpenVINO artifacts where they lower) vs ONNX Runtime's
``quantize_static`` on the same calibration data: task metric, compile time, artifact size.
Same data, same run, same machine.

    python benchmarks/zoo.py [--only NAME ...] [--json PATH] [--cache DIR] [--workers N | --ray ADDRESS]

Each model is one task of mpcompile's executor (``mpcompile.execution``): sequential by
default, ``--workers N`` local processes, ``--ray local|ADDRESS`` a Ray cluster. The rows come
back in the zoo's order whatever ran where; metrics do not depend on the executor, timings
do (models side by side share the machine).

Every artifact's task metric is measured on the entry's held-out evaluation set with the
entry's own metric (accuracy, F1, AUC, exact match, retrieval accuracy). The ORT artifacts of
mpcompile and of ``quantize_static`` both run in a plain ``onnxruntime.InferenceSession``
(CPU provider, default graph optimizations: what a user gets); the TFLite artifact runs
through mpcompile's LiteRT runner (it owns the NHWC layout of the artifact's inputs), the OpenVINO IR
through mpcompile's OpenVINO runner (``compile_model`` on the CPU at ``INFERENCE_PRECISION_HINT=f32``, the
plugin's default: OpenVINO's own CPU default, bf16, would not compute the plan).
``quantize_static`` runs at the settings of ``benchmarks/README.md`` (QDQ, per-channel,
QInt8 activations and weights, MinMax, all op types, no ``quant_pre_process``), fed the same
calibration samples one at a time; its failures are caught and reported.

Progress goes to stderr, the markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models import zoo  # noqa: E402
from models.zoo._common import ort_session  # noqa: E402
from mpcompile.execution import open_executor, worker_threads  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _short(exc: BaseException, n: int = 600) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:n]}{'…' if len(text) > n else ''}"


def run_ort(path: Path, ev: dict, batch: int) -> list[dict]:
    sess = ort_session(path, threads=worker_threads() or 2)
    names = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:
        batch = fixed
    n = len(ev[names[0]])
    return [dict(zip(outs, sess.run(outs, {k: ev[k][i:i + batch] for k in names}))) for i in range(0, n, batch)]


def mpcompile_case(built, backend: str, work: Path, ev: dict) -> dict:
    import mpcompile
    from mpcompile.backends.registry import get_backend

    t0 = time.perf_counter()
    try:
        res = mpcompile.compile(str(built.model_path), data=str(built.calib_path), backends=[backend],
                                out_dir=str(work / f"mp-{backend}"), input_shapes=built.input_shapes, progress=False)
    except Exception as exc:
        return {"ok": False, "error": _short(exc), "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    if backend in res.failures:  # each backend is lowered on its own: a failure is a reason, not an exception
        return {"ok": False, "error": res.failures[backend][:300], "seconds": seconds}
    art = res.artifacts[backend]
    weights = art.path.with_suffix(".bin")  # an OpenVINO IR keeps its weights beside the .xml
    size = art.path.stat().st_size + (weights.stat().st_size if weights.is_file() and weights in art.files else 0)
    row = {"ok": True, "seconds": seconds, "bytes": size}
    try:
        if backend == "onnxruntime":
            outs = run_ort(art.path, ev, built.batch_size)
        else:
            names = [k for k in ev if k in res.plan.inputs]
            b = built.batch_size
            runner_backend = get_backend(backend)
            with runner_backend.runner(art, runner_backend.options()) as runner:
                outs = [runner.run({k: ev[k][i:i + b] for k in names}) for i in range(0, len(ev[names[0]]), b)]
        row["metric"] = built.metric(outs, ev)
    except Exception as exc:
        row.update(ok=False, error="runs but fails: " + _short(exc))
    return row


class _Reader:
    """ORT CalibrationDataReader over the calibration npz, one sample per call."""

    def __init__(self, calib: dict, names: list[str]):
        self.calib, self.names, self.i = calib, names, 0
        self.n = len(calib[names[0]])

    def get_next(self):
        if self.i >= self.n:
            return None
        feed = {k: self.calib[k][self.i:self.i + 1] for k in self.names}
        self.i += 1
        return feed

    def rewind(self):
        self.i = 0


def quantize_static_model(built, out: Path) -> Path:
    """``quantize_static`` at this suite's settings, fed the calibration samples one at a time."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = dict(np.load(built.calib_path))
    names = [i.name for i in ort_session(built.model_path).get_inputs()]
    quantize_static(str(built.model_path), str(out), _Reader(calib, names), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def quantize_static_case(built, work: Path, ev: dict) -> dict:
    out = work / "qs.onnx"
    t0 = time.perf_counter()
    try:
        quantize_static_model(built, out)
    except Exception as exc:
        return {"ok": False, "error": _short(exc), "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    row = {"ok": True, "seconds": seconds, "bytes": out.stat().st_size}
    try:
        row["metric"] = built.metric(run_ort(out, ev, 1), ev)
    except Exception as exc:
        row.update(ok=False, error="runs but fails: " + _short(exc))
    return row


def bench(entry, cache: Path, work: Path) -> dict:
    log(f"[{entry.name}] build")
    built = entry.build(cache, log=log)
    ev = dict(np.load(built.eval_path))
    t0 = time.perf_counter()
    fp32 = built.metric(run_ort(built.model_path, ev, built.batch_size), ev)
    row = {"name": entry.name, "families": list(entry.families), "package": f"{entry.package}=={entry.version}",
           "metric_name": built.metric_name, "eval_samples": built.info["eval_samples"],
           "calib_samples": built.info["calib_samples"],
           "fp32": {"ok": True, "metric": fp32, "bytes": built.model_path.stat().st_size,
                    "seconds": time.perf_counter() - t0}}
    for backend in BACKENDS:
        log(f"[{entry.name}] mpcompile int8 -> {backend}")
        row[f"mpcompile_{backend}"] = mpcompile_case(built, backend, work, ev)
    log(f"[{entry.name}] quantize_static")
    row["quantize_static"] = quantize_static_case(built, work, ev)
    return row


#: mpcompile's backends in the benchmark, each a column
BACKENDS = ("onnxruntime", "tflite", "openvino")
LABELS = {"onnxruntime": "ORT", "tflite": "TFLite", "openvino": "OpenVINO"}
COLUMNS = [("fp32", "FP32"), *((f"mpcompile_{b}", f"mpcompile int8 {LABELS[b]}") for b in BACKENDS),
           ("quantize_static", "ORT quantize_static")]
COMPILED = [k for k, _ in COLUMNS if k != "fp32"]


def _cell(c: dict, what: str) -> str:
    if not c.get("ok"):
        return "fails" if what != "metric" else f"fails [{c.get('note', '?')}]"
    if what == "metric":
        return f"{c['metric']:.4f}"
    if what == "seconds":
        return f"{c['seconds']:.1f}"
    return f"{c['bytes'] / 2**20:.2f}"


def table(rows: list[dict]) -> str:
    notes: list[str] = []
    secs_head = " / ".join([f"mp {LABELS[b]}" for b in BACKENDS] + ["qs"])
    lines = ["| model | metric | " + " | ".join(h for _, h in COLUMNS) + f" | compile s ({secs_head}) | size MiB (FP32 / {secs_head}) |",
             "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | build failed: {r['error']} |" + " |" * (len(COLUMNS) + 2))
            continue
        for key, _ in COLUMNS:
            c = r[key]
            if not c.get("ok"):
                err = c["error"] if len(c["error"]) <= 240 else c["error"][:240] + "…"
                notes.append(f"{r['name']} / {key}: {err}")
                c["note"] = str(len(notes))
        metric = " | ".join(_cell(r[k], "metric") for k, _ in COLUMNS)
        secs = " / ".join(_cell(r[k], "seconds") for k in COMPILED)
        size = " / ".join(_cell(r[k], "bytes") for k, _ in COLUMNS)
        lines.append(f"| {r['name']} | {r['metric_name']} | {metric} | {secs} | {size} |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def bench_task(cache: Path, name: str) -> dict:
    """One executor task: the whole row of one zoo entry (a failure becomes the row's error)."""
    entry = zoo.get(name)
    with tempfile.TemporaryDirectory(prefix=f"zoo-{entry.name}-") as tmp:
        try:
            return bench(entry, cache, Path(tmp))
        except Exception as exc:
            log(traceback.format_exc())
            return {"name": entry.name, "error": _short(exc)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these zoo entries")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--cache", default=None, help="zoo cache (default $MPCOMPILE_ZOO_CACHE or ~/.cache/mpcompile/zoo)")
    ap.add_argument("--workers", type=int, default=None, metavar="N", help="run N models at once on local processes")
    ap.add_argument("--ray", default=None, metavar="ADDRESS", help="run the models on Ray: 'local' or a cluster address")
    args = ap.parse_args(argv)
    cache = Path(args.cache).expanduser() if args.cache else zoo.default_cache()
    names = [e.name for e in zoo.entries() if not args.only or e.name in args.only]
    t0 = time.perf_counter()
    # The benchmark's own module, not __main__: worker processes import the task function by name.
    from benchmarks.zoo import bench_task

    with open_executor(args.workers, args.ray) as executor:
        rows = executor.map(bench_task, executor.share(cache), names, labels=[f"zoo entry {n}" for n in names])
        where = executor.describe()
    print(table(rows))
    print(f"\n{len(rows)} models in {time.perf_counter() - t0:.0f} s ({where})")
    if args.json:
        meta = {"versions": _versions(), "seconds": time.perf_counter() - t0}
        Path(args.json).write_text(json.dumps({"rows": rows, "meta": meta}, indent=2, default=str))
    return 0


def _versions() -> dict:
    out = {}
    for mod in ("mpcompile", "onnxruntime", "onnx", "numpy", "torch", "ai_edge_litert", "openvino"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:
            out[mod] = None
    return out


if __name__ == "__main__":
    raise SystemExit(main())
