"""Accuracy recovery on the zoo: FP32 vs mpcompile's default int8 plan vs the same plan with
recovery options, beside ONNX Runtime's ``quantize_static``, every task metric measured on the
entry's held-out evaluation set in the same run (ORT artifacts, plain ``InferenceSession``).

    python benchmarks/recovery.py [--only NAME ...] [--variant LABEL=KEY=VALUE[,KEY=VALUE]] [--no-qs] [--json PATH]

A variant is a set of ``mpcompile.compile`` keywords (``CalibrationOptions`` fields), e.g.
``--variant recovered=recover=bias_correction+smoothquant``; ``default`` (no keywords) always runs.
The last columns say whether each mpcompile variant is within 1 % of FP32 (relative to FP32's
metric) and the table ends with the share of models that are.
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

from benchmarks.zoo import _short, log, quantize_static_case, run_ort  # noqa: E402
from models import zoo  # noqa: E402

WITHIN = 0.01


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_variant(text: str) -> tuple[str, dict]:
    label, _, rest = text.partition("=")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kwargs[key.strip()] = _value(value.strip())
    return label, kwargs


def mpcompile_variant(built, work: Path, ev: dict, kwargs: dict) -> dict:
    import mpcompile

    t0 = time.perf_counter()
    try:
        res = mpcompile.compile(str(built.model_path), data=str(built.calib_path), backends=["onnxruntime"],
                                out_dir=str(work), input_shapes=built.input_shapes, progress=False, **kwargs)
    except Exception as exc:
        return {"ok": False, "error": _short(exc), "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    if "onnxruntime" in res.failures:
        return {"ok": False, "error": res.failures["onnxruntime"][:300], "seconds": seconds}
    joins = [f"{n.op_type} {n.name}" for n in res.plan.nodes if n.precision_reason and "float join" in n.precision_reason]
    row = {"ok": True, "seconds": seconds, "recovery": res.manifest.get("recovery"), "float_joins": joins,
           "warnings": res.manifest.get("warnings", [])}
    try:
        row["metric"] = built.metric(run_ort(res.artifacts["onnxruntime"].path, ev, built.batch_size), ev)
    except Exception as exc:
        row.update(ok=False, error="runs but fails: " + _short(exc))
    return row


def within(fp32: float, cell: dict) -> bool:
    return bool(cell.get("ok")) and cell["metric"] >= fp32 - WITHIN * abs(fp32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VALUE,...")
    ap.add_argument("--no-qs", action="store_true", help="skip quantize_static")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    variants = [("default", {})] + [parse_variant(v) for v in args.variant]
    cache = zoo.default_cache()
    rows, t0 = [], time.perf_counter()
    for entry in zoo.entries():
        if args.only and entry.name not in args.only:
            continue
        try:
            built = entry.build(cache, log=log)
            ev = dict(np.load(built.eval_path))
            row = {"name": entry.name, "metric_name": built.metric_name,
                   "fp32": built.metric(run_ort(built.model_path, ev, built.batch_size), ev)}
            for label, kwargs in variants:
                log(f"[{entry.name}] mpcompile {label} {kwargs}")
                with tempfile.TemporaryDirectory(prefix=f"rec-{entry.name}-") as tmp:
                    row[label] = mpcompile_variant(built, Path(tmp) / "out", ev, kwargs)
                log(f"[{entry.name}]   -> {row[label].get('metric', row[label].get('error'))}")
            if not args.no_qs:
                log(f"[{entry.name}] quantize_static")
                with tempfile.TemporaryDirectory(prefix=f"qs-{entry.name}-") as tmp:
                    row["quantize_static"] = quantize_static_case(built, Path(tmp), ev)
        except Exception as exc:
            log(traceback.format_exc())
            row = {"name": entry.name, "error": _short(exc)}
        rows.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    labels = [label for label, _ in variants] + ([] if args.no_qs else ["quantize_static"])
    print("| model | metric | FP32 | " + " | ".join(labels) + " | " + " | ".join(f"≤1 % ({v})" for v, _ in variants) + " |")
    print("| --- " * (3 + len(labels) + len(variants)) + "|")
    good = {label: 0 for label, _ in variants}
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | failed: {r['error']} |")
            continue
        cells = [f"{r[k]['metric']:.4f}" if r[k].get("ok") else "fails" for k in labels]
        marks = []
        for label, _ in variants:
            ok = within(r["fp32"], r[label])
            good[label] += ok
            marks.append("yes" if ok else "no")
        print(f"| {r['name']} | {r['metric_name']} | {r['fp32']:.4f} | " + " | ".join(cells) + " | " + " | ".join(marks) + " |")
    n = sum("error" not in r for r in rows)
    for label, _ in variants:
        print(f"{label}: {good[label]}/{n} models within 1 % of FP32")
    print(f"{len(rows)} models in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
