"""``python -m models.zoo list|build [--only NAME ...] [--cache DIR] [--force]``."""

from __future__ import annotations

import argparse
import sys
import time

from models import zoo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.zoo", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="print the entries")
    b = sub.add_parser("build", help="build entries into the cache (skips hash-valid builds)")
    b.add_argument("--only", nargs="+", metavar="NAME", help="only these entries")
    b.add_argument("--cache", default=None, help=f"cache folder (default ${zoo._common.CACHE_ENV} or ~/.cache/mpcompile/zoo)")
    b.add_argument("--force", action="store_true", help="rebuild even when a valid build exists")
    args = ap.parse_args(argv)

    if args.cmd == "list":
        print("| name | families | package | file in wheel | inputs | metric |")
        print("| --- | --- | --- | --- | --- | --- |")
        for e in zoo.entries():
            print(f"| {e.name} | {', '.join(e.families)} | {e.package}=={e.version} | {e.member} | {e.inputs} | {e.metric_name} |")
        return 0

    names = args.only
    if names:
        known = {e.name for e in zoo.entries()}
        unknown = [n for n in names if n not in known]
        if unknown:
            print(f"unknown entries: {', '.join(unknown)}; known: {', '.join(sorted(known))}", file=sys.stderr)
            return 2
    cache = args.cache or zoo.default_cache()
    t0 = time.perf_counter()
    results = zoo.build_all(names, cache, force=args.force, log=lambda m: print(m, file=sys.stderr, flush=True))
    failed = 0
    for name, res in results.items():
        if isinstance(res, Exception):
            failed += 1
            print(f"{name:14s} FAILED  {type(res).__name__}: {res}")
        else:
            print(f"{name:14s} ok      FP32 {res.metric_name.split(' (')[0]} {res.fp32_metric:.4f}  {res.model_path}")
    print(f"{len(results) - failed}/{len(results)} built in {time.perf_counter() - t0:.1f} s ({cache})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
