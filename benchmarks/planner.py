"""The planner benchmark: on zoo models, the task metric of FP32, of mpcompile's default int8
plan, of its ``--precision auto`` plan and of ONNX Runtime's ``quantize_static``, in the same run.

    python benchmarks/planner.py [--only NAME ...] [--target BACKEND] [--budget 0.01] [--json PATH]

The evaluation set of each entry is split in two: the auto search measures on the first half
(its ``--eval-data``, scored with the entry's own task metric through ``metric_fn``), every
figure printed is measured on the second half, which the search never saw. mpcompile's plans
are measured after ``--target``'s legalization with the fake-quant reference (the plan the
backend is held to, within its conformance tolerance); that is also how a TensorRT-ready plan
is measured where TensorRT cannot be installed. ``quantize_static`` (settings of
``benchmarks/README.md``, via ``benchmarks/zoo.py``) runs in a plain ``InferenceSession``.
Progress goes to stderr, the markdown table to stdout; the machine is shared, so the seconds
are noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo import _short, log, quantize_static_case, run_ort  # noqa: E402
from models import zoo  # noqa: E402


def split(ev: dict[str, np.ndarray]) -> tuple[dict, dict, int]:
    """The evaluation arrays cut into a search half and a report half (per-sample keys only)."""
    n = max(len(v) for k, v in ev.items() if k in _per_sample_keys(ev))
    half = n // 2
    per_sample = _per_sample_keys(ev)
    first = {k: (v[:half] if k in per_sample else v) for k, v in ev.items()}
    second = {k: (v[half:] if k in per_sample else v) for k, v in ev.items()}
    return first, second, half


def _per_sample_keys(ev: dict[str, np.ndarray]) -> set[str]:
    counts: dict[int, int] = {}
    for v in ev.values():
        if v.ndim:
            counts[len(v)] = counts.get(len(v), 0) + 1
    n = max(counts, key=lambda k: (counts[k], k))  # the sample count most arrays share
    return {k for k, v in ev.items() if v.ndim and len(v) == n}


def reference_metric(built, plan, target, ev: dict) -> float:
    from mpcompile.reference import ReferenceRunner

    legal, _ = target.backend.legalize(plan, target.options)
    runner = ReferenceRunner(legal)
    names = [k for k in ev if k in legal.inputs]
    b = built.batch_size
    n = len(ev[names[0]])
    return built.metric([runner.run({k: ev[k][i:i + b] for k in names}) for i in range(0, n, b)], ev), legal


def bench(entry, cache: Path, work: Path, target_name: str, budget: float, workers: int | None,
          options: dict | None = None) -> dict:
    import mpcompile
    from mpcompile.backends.registry import resolve_targets
    from mpcompile.ir.cost import PrecisionSummary
    from mpcompile.pipeline import as_graph
    from mpcompile.planning.auto import observed_shapes

    built = entry.build(cache, log=log)
    ev = dict(np.load(built.eval_path))
    search_ev, report_ev, half = split(ev)
    np.savez(work / "search.npz", **{k: v for k, v in search_ev.items() if k in _input_names(built)})
    target = resolve_targets([target_name], options)[0][0]
    row = {"name": entry.name, "metric_name": built.metric_name, "target": target_name, "search_samples": half,
           "report_samples": len(next(iter(report_ev[k] for k in _input_names(built))))}
    row["fp32"] = built.metric(run_ort(built.model_path, report_ev, built.batch_size), report_ev)
    fp32_search = built.metric(run_ort(built.model_path, search_ev, built.batch_size), search_ev)

    def task_metric(fp32_outputs, outputs):
        # fp32_outputs is FP32's own: its score is the FP32 task metric on the search half.
        return fp32_search if outputs is fp32_outputs else built.metric(outputs, search_ev)

    graph = as_graph(str(built.model_path), built.input_shapes)
    shapes = observed_shapes(graph, {k: ev[k][:built.batch_size] for k in _input_names(built)})
    log(f"[{entry.name}] default int8 plan for {target_name}")
    t0 = time.perf_counter()
    default = mpcompile.calibrate(graph, str(built.calib_path), progress=False, targets=[target])
    row["default_seconds"] = time.perf_counter() - t0
    row["default"], legal = reference_metric(built, default.plan, target, report_ev)
    row["default_int8_macs"] = PrecisionSummary.of(legal, shapes).integer_mac_share()
    log(f"[{entry.name}] auto plan for {target_name} (budget {budget:g} of {built.metric_name})")
    t0 = time.perf_counter()
    try:
        auto = mpcompile.calibrate(graph, str(built.calib_path), eval_data=str(work / "search.npz"), precision="auto",
                                   metric_fn=task_metric, max_accuracy_drop=budget, progress=False, targets=[target],
                                   batch_size=built.batch_size, workers=workers)
        row["auto_seconds"] = time.perf_counter() - t0
        row["auto"], legal = reference_metric(built, auto.plan, target, report_ev)
        row["auto_int8_macs"] = PrecisionSummary.of(legal, shapes).integer_mac_share()
        row["auto_search"] = auto.auto.summary()
        log(auto.auto.format_table())
    except Exception as exc:
        row["auto_error"] = _short(exc)
        row["auto_seconds"] = time.perf_counter() - t0
    log(f"[{entry.name}] quantize_static")
    qs = quantize_static_case(built, work, report_ev)
    row["quantize_static"] = qs.get("metric") if qs.get("ok") else None
    row["quantize_static_error"] = qs.get("error")
    return row


def _input_names(built) -> list[str]:
    from models.zoo._common import ort_session

    return [i.name for i in ort_session(built.model_path).get_inputs()]


def _value(text: str):
    return {"true": True, "false": False}.get(text.lower(), text)


def _f(v, fmt=".4f") -> str:
    return "—" if v is None else format(v, fmt)


def table(rows: list[dict]) -> str:
    lines = ["| model | target | metric | FP32 | default int8 | (INT8 MACs) | auto | (INT8 MACs) | quantize_static "
             "| auto − qs | auto search (evaluations, s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cost = r.get("auto_search", {}).get("cost", {})
        auto = r.get("auto")
        delta = auto - r["quantize_static"] if auto is not None and r.get("quantize_static") is not None else None
        lines.append(
            f"| {r['name']} | {r['target']} | {r['metric_name'][:40]} | {_f(r['fp32'])} | {_f(r['default'])} | "
            f"{_f(r.get('default_int8_macs'), '.1%')} | {_f(auto) if auto is not None else 'fails: ' + r.get('auto_error', '')[:80]} | "
            f"{_f(r.get('auto_int8_macs'), '.1%')} | {_f(r.get('quantize_static'))} | {_f(delta, '+.4f')} | "
            f"{cost.get('evaluations', '—')}, {_f(cost.get('seconds'), '.0f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these zoo entries")
    ap.add_argument("--target", default="onnxruntime", help="the backend the plans are legalized for")
    ap.add_argument("--budget", type=float, default=0.01, help="--max-accuracy-drop of the auto plan, in task-metric units")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a backend option of --target (tensorrt: onnx_only=true plans without TensorRT installed)")
    ap.add_argument("--workers", type=int, default=None, help="the auto search's local processes")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--cache", default=None)
    args = ap.parse_args(argv)
    cache = Path(args.cache).expanduser() if args.cache else zoo.default_cache()
    options = {args.target: {k: _value(v) for k, _, v in (o.partition("=") for o in args.option)}} if args.option else None
    rows = []
    for entry in zoo.entries():
        if args.only and entry.name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"planner-{entry.name}-") as tmp:
            try:
                rows.append(bench(entry, cache, Path(tmp), args.target, args.budget, args.workers, options))
            except Exception as exc:
                log(f"[{entry.name}] failed: {_short(exc)}")
                rows.append({"name": entry.name, "target": args.target, "metric_name": "?", "fp32": None,
                             "default": None, "auto_error": _short(exc), "quantize_static": None})
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
