"""The zoo latency table: for every real model in ``models/zoo``, on every backend, mpcompile's
default int8 artifact against FP32 on the same backend, with ONNX Runtime's ``quantize_static``
and ``quantize_dynamic`` artifacts beside them on ORT. Same inputs, same process, same run.

    python benchmarks/zoo_latency.py [--only NAME ...] [--batch 1 --batch 16] [--seconds 1] [--rounds 8] [--json PATH]

Per model: ``mpcompile.compile`` (default plan: minmax, int8; no conformance) for ONNX Runtime,
TFLite and OpenVINO into one output folder, ``quantize_static`` at the settings of
``benchmarks/README.md`` and ``quantize_dynamic`` (``weight_type=QInt8``) into the same folder,
then ``mpcompile.cli.bench_cmd.bench_artifacts``: the code ``mpcompile bench`` runs. Each backend's
artifacts and its FP32 baseline (the model itself for ORT; the model compiled at ``--precision fp32``
for TFLite and OpenVINO) are timed interleaved, round by round, through the runners conformance uses,
on the entry's evaluation inputs. A model with a fixed batch is timed at that batch only.

The table gives FP32 p50 and each artifact's speed against it (FP32 p50 / artifact p50: above 1 is
faster, with the range over the rounds) and says, for an int8 artifact slower than FP32, whether
``compile`` said so: the backend's ``speed_warning`` (an estimate), or its default speed check at
batch 1 (``quick_speed_check``, the CLI's code, run here on the same output folder): the issue's rule is that no model's
recommended plan may be slower than FP32 without saying so. Progress goes to stderr, the markdown
table to stdout. The machine is a shared 2-core VM: read a ratio near 1 as "about the same".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo import _short, _versions, log, quantize_static_model  # noqa: E402
from models import zoo  # noqa: E402

BACKENDS = ("onnxruntime", "tflite", "openvino")


def dynamic_batch(shapes: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[int | None, ...]] | None:
    """A recipe's input shapes with the leading batch of 1 left dynamic (None), the other dims as given."""
    if not shapes:
        return shapes
    return {name: (None, *dims[1:]) if dims and dims[0] == 1 else dims for name, dims in shapes.items()}


def quantize_dynamic_model(built, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(built.model_path), str(out), weight_type=QuantType.QInt8)
    return out


def _peer(name: str, make, built, out: Path, row: dict) -> list[str]:
    try:
        make(built, out)
    except Exception as exc:  # a peer that breaks on a real model is a finding, reported
        row["peers"][name] = _short(exc, 300)
        return []
    return [str(out)]


def measure_entry(entry, cache: Path, work: Path, batches: list[int], seconds: float, rounds: int) -> dict:
    import mpcompile
    from mpcompile.cli.bench_cmd import bench_artifacts, quick_speed_check

    built = entry.build(cache, log=log)
    row: dict = {"name": entry.name, "peers": {}, "warnings": {}}
    out = work / "mp"
    log(f"[{entry.name}] compile for {', '.join(BACKENDS)}")
    # The evaluation data decide, with the calibration data, which dims stay dynamic (a detector calibrated and
    # evaluated on different page sizes keeps H×W dynamic), and the recipes' batch of 1 is left dynamic: a
    # throughput batch is part of the table.
    res = mpcompile.compile(str(built.model_path), data=str(built.calib_path), eval_data=str(built.eval_path),
                            backends=list(BACKENDS), out_dir=str(out), input_shapes=dynamic_batch(built.input_shapes),
                            conform=False, progress=False)
    row["failed"] = dict(res.failures)
    manifest = json.loads((out / "manifest.json").read_text())
    for name, written in manifest["backends"].items():  # what `compile` printed under "! speed:"
        row["warnings"][name] = written.get("speed_warning") or ""
    # ... and what its default speed check measured and said (the CLI's code, on the same folder)
    log(f"[{entry.name}] compile's speed check")
    for c in quick_speed_check(out, str(built.eval_path)).slower_every_round(1):
        name = c.result.subject.backend.name
        row["warnings"][name] = f"measured by compile's speed check ({c.speedup(1):.2f}× at batch 1)" + (
            f"; {row['warnings'][name]}" if row["warnings"].get(name) else "")
    peers = _peer("quantize_static", quantize_static_model, built, work / "qs.qdq.onnx", row)
    peers += _peer("quantize_dynamic", quantize_dynamic_model, built, work / "qd.onnx", row)
    log(f"[{entry.name}] timing at batch {', '.join(map(str, batches))}")
    report = bench_artifacts([str(out), *peers], model=str(built.model_path), data=str(built.eval_path),
                             batches=batches, seconds=seconds, rounds=rounds)
    row["bench"] = report.to_dict()
    row["cells"] = _cells(report)
    return row


def _cells(report) -> list[dict]:
    """One cell per (backend, subject): speed against that backend's FP32 at each batch timed."""
    cells = []
    for comparison in report.comparisons():
        result, base = comparison.result, comparison.baseline
        path = Path(result.subject.artifact.path)
        who = {"qs.qdq.onnx": "quantize_static", "qd.onnx": "quantize_dynamic"}.get(path.name, "mpcompile int8")
        cell = {"backend": result.subject.backend.name, "who": who, "error": result.error,
                "size_ratio": comparison.size_ratio(), "per_batch": {}}
        for batch in report.batches:
            if batch in result.timings and base is not None and batch in base.timings:
                cell["per_batch"][batch] = {"fp32_ms": base.timings[batch].p50_ms, "ms": result.timings[batch].p50_ms,
                                            "speedup": comparison.speedup(batch), "range": comparison.speedup_range(batch)}
            elif batch in result.batch_errors:
                cell["per_batch"][batch] = {"error": result.batch_errors[batch]}
        cells.append(cell)
    return cells


def table(rows: list[dict], batches: list[int]) -> str:
    heads = " | ".join(f"b{b} FP32 ms | b{b} ×FP32" for b in batches)
    lines = [f"| model | backend | artifact | {heads} | size ×FP32 | slower than FP32, said so? |",
             "| --- | --- | --- | " + " | ".join("---: | ---" for _ in batches) + " | ---: | --- |"]
    notes: list[str] = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | — | fails: {r['error'][:200]} |" + " |" * (2 * len(batches) + 2))
            continue
        for backend, why in r.get("failed", {}).items():
            lines.append(f"| {r['name']} | {backend} | no artifact: {why[:160]} |" + " |" * (2 * len(batches) + 2))
        for c in r["cells"]:
            timed = [c["per_batch"].get(b) for b in batches]
            parts = []
            for t in timed:
                if t is None:
                    parts.append("— | —")
                elif "error" in t:
                    notes.append(f"{r['name']} / {c['backend']} / {c['who']}: {t['error'][:200]}")
                    parts.append(f"— | fails [{len(notes)}]")
                else:
                    lo, hi = t["range"] or (t["speedup"], t["speedup"])
                    parts.append(f"{t['fp32_ms']:.2f} | {t['speedup']:.2f} ({lo:.2f}–{hi:.2f})")
            slower = [t for t in timed if t and "speedup" in t and t["speedup"] < 1.0]
            said = ""
            if c["who"] == "mpcompile int8" and slower:
                said = "yes: " + r["warnings"].get(c["backend"], "")[:90] if r["warnings"].get(c["backend"]) else "**no**"
            elif c["error"]:
                notes.append(f"{r['name']} / {c['backend']} / {c['who']}: {c['error'][:200]}")
                said = f"fails [{len(notes)}]"
            size = f"{c['size_ratio']:.2f}" if c["size_ratio"] else "—"
            lines.append(f"| {r['name']} | {c['backend']} | {c['who']} | {' | '.join(parts)} | {size} | {said} |")
        for peer, why in r["peers"].items():
            notes.append(f"{r['name']} / {peer}: {why}")
            lines.append(f"| {r['name']} | onnxruntime | {peer} | fails [{len(notes)}] |" + " |" * (2 * len(batches) + 1))
    for r in rows:
        notes += [f"{r['name']}: {note}" for note in r.get("bench", {}).get("notes", [])]
    if notes:
        lines += ["", *(f"[{i}] {n}" for i, n in enumerate(notes, 1))]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these zoo entries")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes to time (default 1 and 16)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per artifact and batch (default 1)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--cache", default=None, help="zoo cache (default $MPCOMPILE_ZOO_CACHE or ~/.cache/mpcompile/zoo)")
    args = ap.parse_args(argv)
    batches = args.batch or [1, 16]
    cache = Path(args.cache).expanduser() if args.cache else zoo.default_cache()
    rows = []
    t0 = time.perf_counter()
    # Sequential on purpose: two models timed side by side would share the two cores.
    for entry in zoo.entries():
        if args.only and entry.name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"zoo-lat-{entry.name}-") as tmp:
            try:
                rows.append(measure_entry(entry, cache, Path(tmp), batches, args.seconds, args.rounds))
            except Exception as exc:
                rows.append({"name": entry.name, "error": _short(exc)})
    print(table(rows, batches))
    print(f"\n{len(rows)} models in {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "meta": {"versions": _versions(), "batches": batches}},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
