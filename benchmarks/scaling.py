"""Case 6: how calibration and compile time grow with model size and with the number of samples.

- Generated chains (built here with ``onnx.helper``): an MLP of ``depth`` × (MatMul → Add → Relu),
  hidden 128, and a CNN of ``depth`` × (Conv 3×3 → Relu), 8 channels at 16×16; random weights and
  random calibration inputs. For each depth: mpcompile ``pipeline.calibrate`` (entropy) and
  ``mpcompile.compile`` (ORT), and the same with ORT's Entropy calibrator and ``quantize_static``.
- The ``onnx`` wheel's ``onnx/backend/test/data/light/*.onnx`` (classic CNNs, weights generated in
  the graph): ``mpcompile.compile`` for ORT on random inputs; import + plan + lower time =
  compile time − calibration collection time.
- Samples: MNIST entropy calibration on 250 … 2,000 (full: 10,000) samples, time and peak RSS.

Each growth is reported as the least-squares slope of log(time) over log(size): 1 is linear. Fixed
costs (session creation, imports already warm) pull small sizes up, so slopes under 1 are common.
"""

from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibration import _measure
from benchmarks.common import (
    MNIST_BATCH,
    MNIST_MODEL,
    Context,
    Row,
    WorkerError,
    loglog_slope,
    median,
    row,
    short_error,
)

SLOPE_TARGET = "<= 1.2"
MEMORY_SLOPE_TARGET = f"<= {math.log(1.1) / math.log(10):.3f}"  # 10x the samples → < 10 % more memory
CHAIN_BATCH = 32
HIDDEN = 128
CHANNELS, SIZE = 8, 16


# ============================================================================ generated models
def mlp_chain(depth: int, path: Path, seed: int = 0) -> int:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(depth):
        w = (rng.randn(HIDDEN, HIDDEN) / math.sqrt(HIDDEN)).astype(np.float32)
        b = (rng.randn(HIDDEN) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"add{i}"),
            helper.make_node("Relu", [f"add{i}"], [f"relu{i}" if i < depth - 1 else "y"], name=f"relu{i}"),
        ]
        x = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        f"mlp_chain_{depth}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(nodes)


def conv_chain(depth: int, path: Path, seed: int = 0) -> int:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(depth):
        w = (rng.randn(CHANNELS, CHANNELS, 3, 3) / math.sqrt(CHANNELS * 9)).astype(np.float32)
        b = (rng.randn(CHANNELS) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}" if i < depth - 1 else "y"], name=f"relu{i}"),
        ]
        x = f"relu{i}"
    shape = ["batch", CHANNELS, SIZE, SIZE]
    graph = helper.make_graph(
        nodes,
        f"conv_chain_{depth}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(nodes)


CHAINS = {"mlp": (mlp_chain, (HIDDEN,)), "conv": (conv_chain, (CHANNELS, SIZE, SIZE))}


# ============================================================================ run
def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    rows.extend(_chains(ctx))
    rows.extend(_light(ctx))
    rows.extend(_samples(ctx))
    return rows


def _chains(ctx: Context) -> list[Row]:
    folder = ctx.workdir / "chains"
    folder.mkdir(exist_ok=True)
    repeats = ctx.settings.repeats_large
    n = ctx.settings.chain_samples
    rows = []
    for kind, (build, sample_shape) in CHAINS.items():
        data = folder / f"{kind}_data.npz"
        np.savez(data, x=np.random.RandomState(1).randn(n, *sample_shape).astype(np.float32))
        points: list[tuple[int, dict[str, list[float]], list[str]]] = []
        for depth in ctx.settings.chain_depths:
            path = folder / f"{kind}_{depth}.onnx"
            nodes = build(depth, path)
            times: dict[str, list[float]] = {k: [] for k in ("ours_calib", "peer_calib", "ours_compile", "peer_compile")}
            errors: list[str] = []
            for r in range(repeats):
                ctx.log(f"scaling {kind} chain depth {depth} ({nodes} nodes): repeat {r + 1}/{repeats}")
                args = {"model": str(path), "data": str(data), "method": "entropy", "batch": CHAIN_BATCH,
                        "out": str(folder / f"out_{kind}_{depth}_{r}"), "order": r}
                try:
                    res = ctx.job("chain_point", args).data
                except WorkerError as exc:
                    errors.append(f"crashed: {short_error(str(exc).splitlines()[-1])}")
                    continue
                for k in times:
                    if k in res:
                        times[k].append(res[k])
                    elif k + "_error" in res:
                        errors.append(f"{k} at {nodes} nodes: {res[k + '_error']}")
            points.append((nodes, times, errors))
        for what, label in (("calib", "calibration (entropy)"), ("compile", "compile end to end (ORT)")):
            xs = [p[0] for p in points]
            ours = [median(p[1][f"ours_{what}"]) for p in points]
            peer = [median(p[1][f"peer_{what}"]) for p in points]
            s_ours, s_peer = loglog_slope(xs, ours), loglog_slope(xs, peer)
            errs = sorted({e for p in points for e in p[2] if e.startswith(("ours_" + what, "peer_" + what, "crashed"))})
            note = (
                f"{n} samples; nodes {xs}; mpcompile s {_fmt_list(ours)}; peer s {_fmt_list(peer)}; "
                f"peer: {'ORT Entropy calibrator' if what == 'calib' else 'ORT quantize_static'}; {repeats} repeat(s)"
            )
            if errs:
                note += "; errors: " + short_error("; ".join(errs), 300)
            rows.append(
                row(
                    f"scaling/chain-{kind}/{'calibration' if what == 'calib' else 'compile'}-vs-nodes",
                    f"{label} time growth exponent vs node count (log-log slope); ratio = mpcompile's",
                    s_ours, s_peer, s_ours, SLOPE_TARGET, note, ours_failed=s_ours is None,
                )
            )
    return rows


def light_models() -> list[Path]:
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return [Path(p) for p in sorted(glob.glob(str(folder / "*.onnx")))]


def _light(ctx: Context) -> list[Row]:
    import onnx

    folder = ctx.workdir / "light"
    folder.mkdir(exist_ok=True)
    repeats = ctx.settings.repeats_large
    warmup_data = str(ctx.mnist_data(1000))
    rows = []
    xs, ys = [], []
    failures = []
    for path in light_models():
        name = path.stem.replace("light_", "")
        proto = onnx.load(str(path), load_external_data=False)
        nodes = len(proto.graph.node)
        inits = {i.name for i in proto.graph.initializer}
        feeds = {}
        for inp in proto.graph.input:
            if inp.name in inits:
                continue
            dims = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
            feeds[inp.name] = np.random.RandomState(0).rand(ctx.settings.light_samples, *dims[1:]).astype(np.float32)
        data = folder / f"{name}.npz"
        np.savez(data, **feeds)
        results: list[dict[str, Any]] = []
        for r in range(repeats):
            ctx.log(f"scaling light model {name} ({nodes} nodes): repeat {r + 1}/{repeats}")
            args = {"model": str(path), "data": str(data), "out": str(folder / f"out_{name}_{r}"),
                    "warmup_model": str(MNIST_MODEL), "warmup_data": warmup_data}
            try:
                results.append(ctx.job("light_model", args).data)
            except WorkerError as exc:
                results.append({"error": f"crashed: {short_error(str(exc).splitlines()[-1])}"})
        ok = [x for x in results if "error" not in x]
        ipl = median(x["import_plan_lower"] for x in ok)
        error = next((x["error"] for x in results if "error" in x), "")
        if ipl is not None:
            xs.append(nodes)
            ys.append(ipl)
            collect = median(x["collect"] for x in ok)
            plan_nodes = ok[0].get("plan_nodes")
            note = f"{ctx.settings.light_samples} random samples; calibration collection {collect:.3g} s; {plan_nodes} IR nodes after import"
        else:
            failures.append(f"{name}: {short_error(error, 160)}")
            note = f"mpcompile failed: {short_error(error)}"
        rows.append(
            row(
                f"scaling/light/{name}",
                f"import + plan + lower (ORT) [s] of a {nodes}-node ONNX model; no peer",
                ipl, None, None, None, note, ours_failed=ipl is None,
            )
        )
    slope = loglog_slope(xs, ys)
    note = f"{len(xs)} of {len(xs) + len(failures)} models compiled (x = ONNX node count)"
    if failures:
        note += "; failed: " + "; ".join(failures)
    rows.insert(
        0,
        row(
            "scaling/light/import-plan-lower-vs-nodes",
            "import + plan + lower time growth exponent vs ONNX node count (log-log slope); ratio = mpcompile's",
            slope, None, slope, SLOPE_TARGET, note, ours_failed=slope is None,
        ),
    )
    return rows


def _samples(ctx: Context) -> list[Row]:
    counts = ctx.settings.sample_counts
    repeats = ctx.settings.repeats_large
    data = {n: str(ctx.mnist_data(n)) for n in counts}
    ours: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    peer: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for r in range(repeats):
        for n in counts if r % 2 == 0 else list(reversed(counts)):
            ctx.log(f"scaling samples {n}: repeat {r + 1}/{repeats}")
            args = {"model": str(MNIST_MODEL), "data": data[n], "method": "entropy", "batch": MNIST_BATCH}
            ours[n].append(_measure(ctx, "calib_ours", args))
            peer[n].append(_measure(ctx, "calib_ort", args))

    def series(results: dict[int, list[dict[str, Any]]], field: str) -> list[float | None]:
        return [median(x.get(field) for x in results[n] if "error" not in x) for n in counts]

    rows = []
    for field, label, target in (("seconds", "calibration time", SLOPE_TARGET), ("peak", "peak RSS", MEMORY_SLOPE_TARGET)):
        o, p = series(ours, field), series(peer, field)
        s_o, s_p = loglog_slope(counts, o), loglog_slope(counts, p)
        errors = sorted({x["error"] for res in (ours, peer) for lst in res.values() for x in lst if "error" in x})
        note = (
            f"MNIST entropy, samples {counts}; mpcompile {_fmt_list(o)}; peer (ORT Entropy) {_fmt_list(p)} "
            f"({'s' if field == 'seconds' else 'MiB'}); {repeats} repeat(s)"
        )
        if field == "peak":
            note += "; target: 10x the samples → < 10 % more memory, i.e. slope ≤ log 1.1 / log 10"
        if errors:
            note += "; errors: " + short_error("; ".join(errors), 300)
        rows.append(
            row(
                f"scaling/samples/{'time' if field == 'seconds' else 'peak-rss'}-vs-samples",
                f"{label} growth exponent vs number of samples (log-log slope); ratio = mpcompile's",
                s_o, s_p, s_o, target, note, ours_failed=s_o is None,
            )
        )
    return rows


def _fmt_list(values: list[float | None]) -> str:
    return "[" + ", ".join("?" if v is None else f"{v:.3g}" for v in values) + "]"

