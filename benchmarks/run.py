"""Run mpcompile's benchmarks against its peer tools and print one Markdown table.

    python benchmarks/run.py [--quick] [--json PATH] [--only NAME...]

NAME is a family: calibration, memory, compile_time, accuracy, latency, scaling. See
benchmarks/README.md for what each row measures and where each target comes from.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Context, Row, default_cache, environment, markdown_table, summary, write_json  # noqa: E402

FAMILIES = ("calibration", "memory", "compile_time", "accuracy", "latency", "scaling", "tflite_converter")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and samples: a few minutes on 2 cores")
    ap.add_argument("--json", metavar="PATH", help="also write the rows (and run metadata) as JSON")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=FAMILIES, help="run only these families")
    ap.add_argument("--cache", metavar="DIR", help=f"where the MiniLM export is cached (default {default_cache()})")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder (data, artifacts)")
    args = ap.parse_args(argv)

    families = args.only or list(FAMILIES)
    workdir = Path(tempfile.mkdtemp(prefix="mpcompile-bench."))
    ctx = Context(args.quick, workdir, Path(args.cache) if args.cache else default_cache())
    started = time.perf_counter()
    rows: list[Row] = []
    durations: dict[str, float] = {}
    try:
        for name in families:
            ctx.log(f"== {name}")
            t0 = time.perf_counter()
            module = importlib.import_module(f"benchmarks.{name}")
            try:
                rows.extend(module.run(ctx))
            except Exception as exc:  # noqa: BLE001 - one broken family must not hide the others
                traceback.print_exc()
                rows.append(Row(f"{name}/error", "the benchmark family crashed", met=False, note=f"{type(exc).__name__}: {exc}"))
            durations[name] = round(time.perf_counter() - t0, 1)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started

    mode = "quick" if args.quick else "full"
    print(f"\n## mpcompile benchmarks ({mode} run, {total:.0f} s)\n")
    print(markdown_table(rows))
    print()
    print(summary(rows))
    print(f"family durations [s]: {durations}")
    if args.json:
        meta = {
            "mode": mode,
            "seconds": round(total, 1),
            "families": durations,
            "environment": environment(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(rows, args.json, meta)
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
