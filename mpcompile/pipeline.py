"""The compiler's steps as a Python API: import → calibrate → plan → legalize → lower (→ conform).

The CLI commands are thin layers over these functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mpcompile import __version__
from mpcompile.backends.base import Artifact, Backend, Deviation
from mpcompile.backends.registry import resolve_backends
from mpcompile.calibration.collect import CalibrationResult, calibrate_graph
from mpcompile.calibration.data import Dataset, InputSpec, open_dataset
from mpcompile.errors import DataError, MpcompileError, PlanError, UnsupportedOperatorError
from mpcompile.importer import load
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import QType
from mpcompile.outputs import check_output_dir, staging_dir
from mpcompile.planning.config import Override, PlanConfig
from mpcompile.planning.plan import make_plan, tensors_next_to_integer_nodes

Model = str | os.PathLike | Graph


# ============================================================================ helpers
def as_graph(model: Model, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    if isinstance(model, Graph):
        if input_shapes:
            raise MpcompileError("input_shapes applies when importing a model file, not to an in-memory graph")
        return model
    return load(model, input_shapes)


def model_inputs(graph: Graph) -> list[InputSpec]:
    specs = []
    for name in graph.inputs:
        t = graph.tensor(name)
        specs.append(InputSpec(name, tuple(t.shape) if t.shape is not None else (), t.dtype or "float32"))
    return specs


def open_data(graph: Graph, data: Any, preprocess: Any = None) -> Dataset:
    if data is None:
        raise DataError(f"model {graph.name!r} needs calibration data for an integer plan: pass --data (an .npz keyed by input names)")
    if isinstance(data, Dataset):
        return data
    return open_dataset(data, model_inputs(graph), preprocess=preprocess)


def check_supported(plan: Graph, backends: Sequence[Backend]) -> None:
    """Refuse early when a chosen backend cannot run some operator at all, not even in FP32."""
    for backend in backends:
        table = backend.supported_ops()
        if table is None:
            continue
        missing = sorted({(n.op_type, n.name) for n in plan.nodes if n.op_type not in table})
        if missing:
            listing = ", ".join(f"{op} (node {name})" for op, name in missing[:6])
            dynamic = {"Shape", "ConstantOfShape", "Range", "Size", "NonZero"} & {op for op, _ in missing}
            hint = (
                "; the model computes shapes at run time: freeze its inputs with --input-shape NAME=DIMS"
                if dynamic else "; choose another backend with --backend"
            )
            raise UnsupportedOperatorError(
                f"backend {backend.name!r} cannot run {len(missing)} node(s) of model {plan.name!r}: {listing}{hint}"
            )


# ============================================================================ calibrate
@dataclasses.dataclass
class CalibrateResult:
    plan: Graph
    stats: CalibrationResult | None
    config: PlanConfig
    auto: Any = None  # planning.auto.AutoPlanResult for --precision auto


def plan_config(
    precision: str = "int8",
    activation_type: str | QType = "int8",
    symmetric: bool = False,
    per_channel: bool = True,
    weight_method: str = "minmax",
    keep: Sequence[str] = (),
) -> PlanConfig:
    return PlanConfig(
        precision=precision,
        activation_type=QType(activation_type) if precision != "int16" else QType.INT16,
        symmetric_activations=symmetric,
        per_channel=per_channel,
        weight_method=weight_method,
        overrides=tuple(Override.parse(k) for k in keep),
    )


def calibrate(
    model: Model,
    data: Any = None,
    *,
    method: str = "minmax",
    method_options: dict[str, Any] | None = None,
    precision: str = "int8",
    activation_type: str = "int8",
    symmetric: bool = False,
    per_channel: bool = True,
    weight_method: str = "minmax",
    keep: Sequence[str] = (),
    batch_size: int = 32,
    samples: int | None = None,
    nan_policy: str = "error",
    stats: str | os.PathLike | CalibrationResult | None = None,
    save_stats: str | os.PathLike | None = None,
    preprocess: Any = None,
    progress: bool = True,
    eval_data: Any = None,
    metric: str = "top1",
    max_accuracy_drop: float = 0.01,
    metric_fn: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    overrides: str | os.PathLike | None = None,
) -> CalibrateResult:
    """Calibrate ``model`` on ``data`` and return the plan (see ``mpcompile calibrate --help``).

    ``precision="auto"`` searches the plan with the most INT8 layers whose ``metric`` on
    ``eval_data`` (default: the calibration data) drops at most ``max_accuracy_drop``.
    ``input_shapes`` freezes dynamic input dimensions at import (shape subgraphs fold away).
    """
    graph = as_graph(model, input_shapes)
    config = plan_config(precision, activation_type, symmetric, per_channel, weight_method, keep)
    pins: dict[str, Any] = {}
    if overrides is not None:
        from mpcompile.planning.overrides import precision_overrides, read_overrides

        pins = read_overrides(overrides)
        config = dataclasses.replace(config, overrides=config.overrides + precision_overrides(pins))
    if graph.metadata.get("mpcompile.policy") == "qdq-import" and precision == "int8" and data is None and stats is None:
        # A QDQ model (QAT, another quantizer) already is a plan: keep its numbers exactly.
        return CalibrateResult(graph, None, config)
    needs_stats = precision in ("int8", "int16", "mixed", "auto") or any(o.precision.is_integer for o in config.overrides)
    needs_stats = needs_stats or precision in ("fp16", "bf16")  # range checks for half precision
    result: CalibrationResult | None = None
    if isinstance(stats, CalibrationResult):
        result = stats.with_method(method, **(method_options or {}))
    elif stats is not None:
        result = CalibrationResult.load(stats).with_method(method, **(method_options or {}))
    elif needs_stats and (data is not None or precision in ("int8", "int16", "mixed", "auto")):
        dataset = open_data(graph, data, preprocess)
        # A uniform integer plan annotates only tensors next to integer nodes: observe just those
        # (MiniLM: GELU's float interior is a quarter of the values). Saved statistics stay complete.
        needed = tensors_next_to_integer_nodes(graph, config) if precision in ("int8", "int16") and save_stats is None else None
        result = calibrate_graph(
            graph,
            dataset,
            method=method,
            method_options=method_options,
            batch_size=batch_size,
            samples=samples,
            nan_policy=nan_policy,
            progress=progress,
            needed=needed,
        )
    if save_stats is not None and result is not None:
        result.save(save_stats)
    if precision == "auto":
        from mpcompile.planning.auto import auto_plan

        if result is None:
            raise DataError(f"--precision auto on model {graph.name!r} needs calibration data (--data) or --stats")
        evaluation = open_data(graph, eval_data if eval_data is not None else data, preprocess)
        auto = auto_plan(graph, result, config, evaluation, metric=metric, max_drop=max_accuracy_drop,
                         metric_fn=metric_fn, samples=samples or 256, batch_size=batch_size, progress=progress)
        _pin(auto.plan, pins, overrides)
        return CalibrateResult(auto.plan, result, config, auto)
    plan = make_plan(graph, result, config)
    _pin(plan, pins, overrides)
    return CalibrateResult(plan, result, config)


def _pin(plan: Graph, pins: dict[str, Any], source: Any) -> None:
    if pins.get("tensors"):
        from mpcompile.planning.overrides import apply_tensor_pins

        apply_tensor_pins(plan, pins, str(source))


# ============================================================================ lower
@dataclasses.dataclass
class LowerResult:
    backend: str
    artifact: Artifact
    plan: Graph  # the legalized plan the artifact implements
    deviations: list[Deviation]
    seconds: float


def lower_one(backend: Backend, plan: Graph, out_dir: Path, stem: str = "model", **options: Any) -> LowerResult:
    started = time.perf_counter()
    legal, deviations = backend.legalize(plan)
    backend_dir = out_dir / backend.name
    backend_dir.mkdir(parents=True, exist_ok=True)
    artifact = backend.lower(legal, backend_dir, stem=stem, **options)
    artifact.deviations = list(deviations) + [d for d in artifact.deviations if d not in deviations]
    return LowerResult(backend.name, artifact, legal, artifact.deviations, time.perf_counter() - started)


def lower(
    plan: Model,
    backends: Sequence[str] | None = None,
    out_dir: str | os.PathLike = "mpcompile-out",
    *,
    stem: str | None = None,
    **options: Any,
) -> dict[str, LowerResult]:
    """Legalize and lower a plan for each backend into ``out_dir`` (with ``manifest.json``).

    ``options`` go to every backend's ``lower`` (e.g. ``onnx_only=True`` for TensorRT).
    """
    check_output_dir(out_dir)
    options = {k: v for k, v in options.items() if v}
    graph = as_graph(plan)
    if not graph.is_annotated:
        raise PlanError(f"{plan}: not a plan; run `mpcompile calibrate` first (or use `mpcompile compile`)")
    chosen = resolve_backends(list(backends) if backends else None, **options)
    check_supported(graph, chosen)
    results: dict[str, LowerResult] = {}
    with staging_dir(out_dir) as tmp:
        for backend in chosen:
            result = lower_one(backend, graph, tmp, stem or _stem(graph), **options)
            results[backend.name] = result
        _write_manifest(tmp, graph, results, model_path=None, extra={})
    return _relocate(results, tmp, Path(out_dir))


def _stem(graph: Graph) -> str:
    source = graph.metadata.get("source")
    return Path(source).stem if source else (graph.name or "model")


def _relocate(results: dict[str, LowerResult], tmp: Path, out: Path) -> dict[str, LowerResult]:
    """Point artifacts at their final location after the staging folder moved."""
    for r in results.values():
        r.artifact.path = out / r.artifact.path.relative_to(tmp)
        r.artifact.files = [out / f.relative_to(tmp) for f in r.artifact.files]
    return results


def _write_manifest(
    out: Path, plan: Graph, results: dict[str, LowerResult], model_path: str | None, extra: dict[str, Any]
) -> Path:
    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(out))
        except ValueError:
            return str(p)

    manifest = {
        "mpcompile": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model_path,
        "model_sha256": serde.model_hash(model_path) if model_path and Path(model_path).is_file() else None,
        "plan_sha256": serde.plan_hash(plan),
        "backends": {
            name: {
                "artifact": rel(r.artifact.path),
                "files": [rel(f) for f in r.artifact.files],
                "deviations": [d.to_dict() for d in r.deviations],
                # tensor_map is runner plumbing (IR name -> artifact tensor), too bulky for a manifest
                "metadata": {k: v for k, v in r.artifact.metadata.items() if k != "tensor_map"},
                "lower_seconds": round(r.seconds, 4),
            }
            for name, r in results.items()
        },
        **extra,
    }
    path = out / "manifest.json"
    serde.write_atomic(path, json.dumps(manifest, indent=2, default=str).encode())
    return path


# ============================================================================ compile
@dataclasses.dataclass
class CompileResult:
    out_dir: Path
    plan: Graph
    plan_path: Path
    artifacts: dict[str, Artifact]
    deviations: dict[str, list[Deviation]]
    manifest_path: Path
    timings: dict[str, float]
    conformance: Any = None  # ConformanceReport when requested
    stats: CalibrationResult | None = None
    auto: Any = None  # AutoPlanResult for precision="auto"

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())


def compile(  # noqa: A001 - the natural name for a compiler's entry point
    model: str | os.PathLike,
    data: Any = None,
    backends: Sequence[str] | None = None,
    out_dir: str | os.PathLike = "mpcompile-out",
    *,
    precision: str = "int8",
    method: str = "minmax",
    method_options: dict[str, Any] | None = None,
    activation_type: str = "int8",
    symmetric: bool = False,
    per_channel: bool = True,
    weight_method: str = "minmax",
    keep: Sequence[str] = (),
    batch_size: int = 32,
    samples: int | None = None,
    nan_policy: str = "error",
    preprocess: Any = None,
    conform: bool = False,
    eval_data: Any = None,
    progress: bool = True,
    metric: str = "top1",
    max_accuracy_drop: float = 0.01,
    metric_fn: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    overrides: str | os.PathLike | None = None,
    **lower_options: Any,
) -> CompileResult:
    """Import → calibrate → plan → legalize → lower for each backend; optionally run conformance.

    Writes ``out_dir/plan.onnx``, one folder per backend with its artifact, and
    ``out_dir/manifest.json``. Nothing is left behind if any step fails.
    """
    check_output_dir(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lower_options = {k: v for k, v in lower_options.items() if v}
    chosen = resolve_backends(list(backends) if backends else None, **lower_options)
    graph = as_graph(model, input_shapes)
    timings["import"] = time.perf_counter() - t0
    check_supported(graph, chosen)
    t1 = time.perf_counter()
    calibrated = calibrate(
        graph,
        data,
        method=method,
        method_options=method_options,
        precision=precision,
        activation_type=activation_type,
        symmetric=symmetric,
        per_channel=per_channel,
        weight_method=weight_method,
        keep=keep,
        batch_size=batch_size,
        samples=samples,
        nan_policy=nan_policy,
        preprocess=preprocess,
        progress=progress,
        eval_data=eval_data,
        metric=metric,
        max_accuracy_drop=max_accuracy_drop,
        metric_fn=metric_fn,
        overrides=overrides,
    )
    timings["calibrate"] = time.perf_counter() - t1
    plan = calibrated.plan
    plan.metadata.setdefault("source", str(model))
    out = Path(out_dir)
    report = None
    with staging_dir(out) as tmp:
        plan_path = serde.save_plan(plan, tmp / "plan.onnx")
        results: dict[str, LowerResult] = {}
        for backend in chosen:
            results[backend.name] = lower_one(backend, plan, tmp, _stem(graph), **lower_options)
            timings[f"lower:{backend.name}"] = results[backend.name].seconds
        extra: dict[str, Any] = {
            "plan": "plan.onnx",
            "policy": dataclasses.asdict(calibrated.config) | {"overrides": [f"{o.pattern}={o.precision.value}" for o in calibrated.config.overrides], "activation_type": calibrated.config.activation_type.value},
            "calibration": None
            if calibrated.stats is None
            else {"method": calibrated.stats.method, "options": calibrated.stats.options, "samples": calibrated.stats.samples, "seconds": round(calibrated.stats.seconds, 4)},
        }
        if calibrated.auto is not None:
            extra["auto"] = {
                "metric": calibrated.auto.metric,
                "max_accuracy_drop": calibrated.auto.budget,
                "chosen": calibrated.auto.chosen.to_dict(),
                "pareto": [row.to_dict() for row in calibrated.auto.rows],
            }
        if conform:
            from mpcompile.conformance.suite import conform_results

            t2 = time.perf_counter()
            check_data = eval_data if eval_data is not None else data
            report = conform_results(
                plan, results, open_data(graph, check_data, preprocess), samples=samples, batch_size=batch_size,
                backends={b.name: b for b in chosen},
            )
            timings["conform"] = time.perf_counter() - t2
            report.save_json(tmp / "conformance.json")
            report.save_html(tmp / "conformance.html")
            extra["conformance"] = report.summary()
        timings["total"] = time.perf_counter() - t0
        extra["timings"] = {k: round(v, 4) for k, v in timings.items()}
        manifest_path = _write_manifest(tmp, plan, results, str(model), extra)
    _relocate(results, tmp, out)
    return CompileResult(
        out_dir=out,
        plan=plan,
        plan_path=out / plan_path.name,
        artifacts={k: r.artifact for k, r in results.items()},
        deviations={k: r.deviations for k, r in results.items()},
        manifest_path=out / manifest_path.name,
        timings=timings,
        conformance=report,
        stats=calibrated.stats,
        auto=calibrated.auto,
    )


def default_data(model: str | os.PathLike, kind: str) -> Path | None:
    """``<model stem>.calib.npz`` / ``<model stem>.eval.npz`` next to the model, if present."""
    path = Path(model)
    candidate = path.with_name(f"{path.stem}.{kind}.npz")
    return candidate if candidate.is_file() else None
