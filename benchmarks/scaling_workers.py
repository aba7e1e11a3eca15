"""Speed-up of sensitivity and the auto search against the number of workers (issue 20).

    python benchmarks/scaling_workers.py [--quick] [--repeats N] [--workers 1 2] [--no-ray]
                                         [--models mnist minilm] [--tasks sensitivity auto] [--json PATH]

For MNIST (shipped), zoo entries named with ``--models`` (e.g. ``ppocr_rec``, the 294-layer CTC
recogniser), and MiniLM-L6 (exported once by ``models/export_minilm.py`` and cached, as in
``benchmarks/run.py``): ``local_sensitivity`` over every integer layer and ``auto_plan`` (cosine,
a tight budget, so the search runs long: exponential steps, then bisection), each sequential, on
N local worker processes, and on a local Ray cluster with ``num_cpus=2``.

Every measurement runs in a fresh process (``--child``): the model is calibrated first
(untimed), then the timer covers what a user waits for: starting the executor (spawning the
workers or starting Ray), sharing the model and data, the tasks, and stopping the executor
(*cold*). The same work then runs again on the still-running executor (*warm*: the steady state
of a long sweep, e.g. a model zoo on one pool). Configurations alternate within each repeat
(order reversed on odd repeats); the medians are reported, with the identity of the results
(sensitivity numbers, ``plan_hash``) across every configuration and the 1-minute load average
around each measurement: the machine is shared, and a busy neighbour shows there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import MNIST_CALIB, MNIST_EVAL, MNIST_MODEL, Context, Row, default_cache, markdown_table  # noqa: E402

RESULT = "@@RESULT "
TARGET = ">= 1.7"  # issue 20: with 2 workers


# ============================================================================ the measured child
def child(args: dict[str, Any]) -> dict[str, Any]:
    from mpcompile.execution import open_executor
    from mpcompile.ir import serde
    from mpcompile.pipeline import as_graph, calibrate, open_data
    from mpcompile.planning.auto import auto_plan
    from mpcompile.planning.sensitivity import local_sensitivity

    shapes = {k: tuple(v) for k, v in args["input_shapes"].items()} if args.get("input_shapes") else None
    calibrated = calibrate(args["model"], args["calib"], input_shapes=shapes, progress=False)
    graph = as_graph(args["model"], shapes)

    def work(executor: Any) -> str:
        if args["task"] == "sensitivity":
            plan = calibrated.plan
            layers = local_sensitivity(plan, open_data(plan, args["calib"]), samples=args["samples"], executor=executor)
            numbers = json.dumps([[s.node, s.sqnr_db, s.macs, s.weight_bytes] for s in layers]).encode()
            return "sensitivity " + hashlib.sha256(numbers).hexdigest()[:16] + f" ({len(layers)} layers)"
        result = auto_plan(graph, calibrated.stats, calibrated.config, open_data(graph, args["eval"]),
                           metric="cosine", max_drop=args["budget"], samples=args["samples"], executor=executor)
        rows = ",".join(str(r.promoted) for r in result.rows)
        return f"plan {serde.plan_hash(result.plan)[:16]} (k={result.chosen.promoted}; evaluated {rows})"

    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    executor = open_executor(args["workers"], "local" if args["ray"] else None)  # Ray: starts it, num_cpus=workers
    try:
        digest = work(executor)
        cold_seconds_before_close = time.perf_counter() - t0
        warm = None
        if args["warm"]:
            t1 = time.perf_counter()
            if work(executor) != digest:
                raise AssertionError("a second run on the same executor gave other results")
            warm = time.perf_counter() - t1
        t2 = time.perf_counter()
    finally:
        executor.close()
    cold = cold_seconds_before_close + (time.perf_counter() - t2)
    load.append(os.getloadavg()[0])
    return {"cold": cold, "warm": warm, "digest": digest, "load": load}


def run_child(args: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


# ============================================================================ the benchmark
def cases(ctx: Context, quick: bool, models: list[str]) -> list[dict[str, Any]]:
    found = [
        {"key": "mnist", "task": "sensitivity", "model": str(MNIST_MODEL), "calib": str(MNIST_CALIB), "samples": 32},
        {"key": "mnist", "task": "auto", "model": str(MNIST_MODEL), "calib": str(MNIST_CALIB), "eval": str(MNIST_EVAL),
         "samples": 1000, "budget": 1e-5},
    ] if "mnist" in models else []
    found += zoo_cases([m for m in models if m not in ("mnist", "minilm")], quick)
    if "minilm" not in models:
        return found
    minilm = ctx.minilm()
    if minilm is None:
        print(f"MiniLM rows skipped: {ctx.minilm_error}", file=sys.stderr)
    else:
        found += [
            {"key": "minilm", "task": "sensitivity", "model": minilm["model"], "calib": minilm["calib"], "samples": 32},
            {"key": "minilm", "task": "auto", "model": minilm["model"], "calib": minilm["calib"], "eval": minilm["eval"],
             "samples": 64 if quick else 128, "budget": 1e-3},
        ]
    return found


def zoo_cases(names: list[str], quick: bool) -> list[dict[str, Any]]:
    """Sensitivity and the auto search on zoo entries (built into the zoo cache first, as the zoo tests do)."""
    if not names:
        return []
    from models import zoo

    found = []
    for name in names:
        built = zoo.get(name).build()
        common = {"key": name, "model": str(built.model_path), "calib": str(built.calib_path),
                  "input_shapes": {k: list(v) for k, v in (built.input_shapes or {}).items()}}
        found += [{**common, "task": "sensitivity", "samples": 16 if quick else 32},
                  {**common, "task": "auto", "eval": str(built.eval_path), "samples": 32 if quick else 64,
                   "budget": 1e-3}]
    return found


def configurations(workers: list[int], ray: bool) -> list[tuple[str, int, bool]]:
    configs = [(("sequential" if n == 1 else f"{n} processes"), n, False) for n in workers]
    if ray:
        configs.append(("ray local, 2 CPUs", 2, True))
    return configs


def measure(ctx: Context, case: dict[str, Any], configs: list[tuple[str, int, bool]], repeats: int,
            warm: bool) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in configs}
    for r in range(repeats):
        order = configs if r % 2 == 0 else list(reversed(configs))
        for name, n, ray in order:
            ctx.log(f"{case['key']} {case['task']}: {name}, repeat {r + 1}/{repeats}")
            results[name].append(run_child({**case, "workers": n, "ray": ray, "warm": warm}))
    return results


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(case: dict[str, Any], configs: list[tuple[str, int, bool]], results: dict[str, list[dict[str, Any]]],
           lines: list[str]) -> list[Row]:
    rows: list[Row] = []
    ok = {name: [m for m in ms if "error" not in m] for name, ms in results.items()}
    digests = {m["digest"] for ms in ok.values() for m in ms}
    identical = len(digests) == 1
    base_name = configs[0][0]
    base = _median([m["cold"] for m in ok[base_name]])
    base_warm = _median([m["warm"] for m in ok[base_name]])
    for name, n, ray in configs:
        errors = [m["error"] for m in results[name] if "error" in m]
        cold = _median([m["cold"] for m in ok[name]])
        warm_s = _median([m["warm"] for m in ok[name]])
        loads = [x for m in ok[name] for x in m["load"]]
        spread = [m["cold"] for m in ok[name]]
        ratio = base / cold if base and cold else None
        warm_ratio = base_warm / warm_s if base_warm and warm_s else None
        paired = _paired(results[base_name], results[name])
        lines.append(
            f"| {case['key']} | {case['task']} | {name} | {fmt(cold)} ({fmt(min(spread) if spread else None)}–"
            f"{fmt(max(spread) if spread else None)}) | {fmt(ratio, 'x')} | {fmt(warm_s)} | {fmt(warm_ratio, 'x')} | "
            f"{min(loads, default=0):.1f}–{max(loads, default=0):.1f} | "
            f"{'yes' if identical else 'NO'} |" + (f" {errors[0]}" if errors else "")
        )
        if name == base_name:
            continue
        target = TARGET if n == 2 and not ray else None
        met = None if ratio is None or target is None else ratio >= 1.7
        rows.append(Row(
            f"scaling_workers/{case['key']}/{case['task']}/{name.replace(' ', '-')}",
            f"s, cold ({base_name} / {name}: speed-up)", cold, base, ratio, target, met,
            f"warm {fmt(warm_s)} s vs {fmt(base_warm)} s ({fmt(warm_ratio, 'x')}); speed-up per repeat (paired): "
            f"cold {paired['cold']}, warm {paired['warm']}; identical results: "
            f"{'yes' if identical else 'NO'}; {', '.join(sorted(digests))}" + (f"; errors: {errors[0]}" if errors else ""),
        ))
    return rows


def _paired(base: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, str]:
    """Speed-ups within each repeat (the two ran back to back, under about the same load): their range."""
    out = {}
    for key in ("cold", "warm"):
        ratios = [b[key] / o[key] for b, o in zip(base, other) if b.get(key) and o.get(key)]
        out[key] = f"{min(ratios):.2f}–{max(ratios):.2f}x" if ratios else "—"
    return out


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.2f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def run(ctx: Context, *, workers: list[int] | None = None, ray: bool | None = None, repeats: int | None = None,
        lines: list[str] | None = None, models: list[str] | None = None, tasks: list[str] | None = None) -> list[Row]:
    """The rows (for ``benchmarks/run.py``-style tables); ``lines`` receives the detailed Markdown table."""
    import importlib.util

    workers = workers or [1, 2]
    if ray is None:
        ray = importlib.util.find_spec("ray") is not None
    repeats = repeats or (1 if ctx.quick else 3)
    configs = configurations(workers, ray)
    lines = lines if lines is not None else []
    lines += ["| model | task | executor | cold s (min–max) | speed-up | warm s | warm speed-up | load | identical |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows: list[Row] = []
    for case in cases(ctx, ctx.quick, models or ["mnist", "minilm"]):
        if tasks and case["task"] not in tasks:
            continue
        results = measure(ctx, case, configs, repeats, warm=not ctx.quick)
        rows += report(case, configs, results, lines)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="one repeat, no warm runs, a shorter MiniLM search")
    ap.add_argument("--repeats", type=int, default=None, help="fresh-process repeats (default 3, quick 1)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts (the first is the baseline)")
    ap.add_argument("--no-ray", action="store_true", help="skip the local Ray rows")
    ap.add_argument("--models", nargs="+", default=["mnist", "minilm"],
                    help="mnist, minilm and/or zoo entry names (python -m models.zoo list), e.g. ppocr_rec")
    ap.add_argument("--tasks", nargs="+", choices=["sensitivity", "auto"], default=["sensitivity", "auto"])
    ap.add_argument("--cache", help=f"where the MiniLM export is cached (default {default_cache()})")
    ap.add_argument("--json", metavar="PATH", help="also write the rows and the detailed table as JSON")
    args = ap.parse_args(argv)
    if args.child:
        print(RESULT + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="mpcompile-bench-workers.") as tmp:
        ctx = Context(args.quick, Path(tmp), Path(args.cache) if args.cache else default_cache())
        lines: list[str] = []
        started = time.perf_counter()
        rows = run(ctx, workers=args.workers, ray=False if args.no_ray else None, repeats=args.repeats, lines=lines,
                   models=args.models, tasks=args.tasks)
    print(f"\n## scaling with workers ({os.cpu_count()} cores, {time.perf_counter() - started:.0f} s)\n")
    print("\n".join(lines))
    print()
    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [r.to_dict() for r in rows], "table": lines}, indent=2))
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
