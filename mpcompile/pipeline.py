"""The only orchestrator: import → calibrate → plan → legalize → lower → conform.

The CLI commands and the Python API (``mpcompile.compile`` …) are thin layers over these
functions. Every backend of a run is a ``Target`` (a backend and its validated options) and
is lowered on its own: one that cannot take the model is reported with its reason and the
others are still written, conformed and listed in the manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mpcompile import objective
from mpcompile._version import __version__
from mpcompile.backends.base import Artifact
from mpcompile.backends.capabilities import Deviation
from mpcompile.backends.options import BackendOptions
from mpcompile.backends.registry import Skipped, resolve_targets
from mpcompile.backends.targets import LowerResult, Target, lower_target, shaped_for, unsupported_ops
from mpcompile.calibration import guards
from mpcompile.calibration.collect import CalibrationResult, calibrate_graph
from mpcompile.conformance import ConformanceReport, Tolerances, check_artifacts
from mpcompile.conformance.run import common_batch_size
from mpcompile.data import open_data
from mpcompile.errors import DataError, MpcompileError, PlanError, UnsupportedOperatorError
from mpcompile.importer import load
from mpcompile.ir import serde
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import QType
from mpcompile.outputs import check_output_dir, scratch_dir, staging_dir
from mpcompile.planning.config import Override, PlanConfig
from mpcompile.planning.plan import make_plan, tensors_next_to_integer_nodes
from mpcompile.recovery import parse_recover, prepare_graph, refine_plan
from mpcompile.recovery.run import SAMPLES as RECOVERY_SAMPLES

Model = str | os.PathLike | Graph
BackendOptionValues = Mapping[str, Mapping[str, Any] | BackendOptions]

#: Exit codes of ``compile``/``lower``/``conform`` (the CLI's, documented in ``--help`` and the README).
EXIT_OK = 0  # every requested backend produced an artifact (that conforms, when conformance ran)
EXIT_NONCONFORMING = 1  # every artifact was written, and at least one is out of tolerance
EXIT_USAGE = MpcompileError.exit_code  # bad input: nothing was written (2)
EXIT_BACKEND_FAILED = 3  # at least one backend produced no artifact (the others were written)
EXIT_PLAN_COST = 4  # conform --max-accuracy-drop: every backend equals the plan, the plan costs too much against FP32

__all__ = [
    "CalibrateResult", "CalibrationOptions", "CompileResult", "LowerResult", "calibrate", "compile", "conform", "lower",
]


# ============================================================================ inputs
def as_graph(model: Model, input_shapes: dict[str, tuple[int, ...]] | None = None, data: Any = None) -> Graph:
    """``model`` as an IR graph; without ``input_shapes``, ``data`` freezes the dynamic dims it fixes (importer.load)."""
    if isinstance(model, Graph):
        if input_shapes:
            raise MpcompileError("input_shapes applies when importing a model file, not to an in-memory graph")
        return model
    return load(model, input_shapes, data=data)


def default_data(model: str | os.PathLike, kind: str) -> Path | None:
    """``<model stem>.calib.npz`` / ``<model stem>.eval.npz`` next to the model, if present."""
    path = Path(model)
    candidate = path.with_name(f"{path.stem}.{kind}.npz")
    return candidate if candidate.is_file() else None


# ============================================================================ calibrate
@dataclasses.dataclass(frozen=True)
class CalibrationOptions:
    """How a plan is made: the policy, the calibration method and the data handling.

    The one list of these options: ``calibrate``, ``compile`` and ``conform`` take them as
    keywords (``method="entropy"``) or as one object (``options=CalibrationOptions(...)``).
    """

    precision: str = "int8"
    method: str = "minmax"
    method_options: Mapping[str, Any] | None = None
    activation_type: str = "int8"
    symmetric: bool = False
    per_channel: bool = True
    weight_method: str = "minmax"
    keep: Sequence[str] = ()
    overrides: str | os.PathLike | None = None
    batch_size: int = 32
    samples: int | None = None
    nan_policy: str = "error"
    preprocess: Any = None
    stats: str | os.PathLike | CalibrationResult | None = None
    save_stats: str | os.PathLike | None = None
    metric: str = "auto"
    max_accuracy_drop: float = 0.01
    metric_fn: str | None = None
    #: --precision auto: "int8" (the most INT8 MACs within budget) or "latency" (the fastest within budget, timed)
    objective: str = "int8"
    workers: int | None = None  # the auto search's executor: local processes (mpcompile.execution)
    #: accuracy recovery (mpcompile.recovery): "none", "all" or names joined by "+", e.g. "bias_correction+rounding"
    recover: str | Sequence[str] | None = None
    ray: str | None = None  # ... or a Ray cluster: "local" or an address

    @classmethod
    def build(cls, options: CalibrationOptions | None, keywords: Mapping[str, Any]) -> CalibrationOptions:
        """``options`` with ``keywords`` applied; an unknown keyword names the valid ones."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - fields)
        if unknown:
            raise MpcompileError(
                f"unknown option(s) {', '.join(map(repr, unknown))}; calibration options are {', '.join(sorted(fields))} "
                f"(backend options go in backend_options={{'BACKEND': {{...}}}})"
            )
        built = dataclasses.replace(options or cls(), **keywords)
        if built.objective not in ("int8", "latency"):
            raise PlanError(f"objective {built.objective!r}: use 'int8' (the most INT8 MACs within budget) or 'latency'")
        if built.objective == "latency" and built.precision != "auto":
            raise PlanError("--objective latency chooses among the plans of --precision auto; add --precision auto")
        return built

    def plan_config(self) -> PlanConfig:
        return PlanConfig(
            precision=self.precision,
            activation_type=QType(self.activation_type) if self.precision != "int16" else QType.INT16,
            symmetric_activations=self.symmetric,
            per_channel=self.per_channel,
            weight_method=self.weight_method,
            overrides=tuple(Override.parse(k) for k in self.keep),
        )

    def summary(self) -> dict[str, Any]:
        """The options as the manifest records them (no data objects)."""
        skip = {"preprocess", "stats", "save_stats", "workers", "ray"}  # where it ran never changes the plan
        return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclasses.dataclass
class CalibrateResult:
    plan: Graph
    stats: CalibrationResult | None
    config: PlanConfig
    auto: Any = None  # planning.auto.AutoPlanResult for --precision auto
    recovery: list[Any] = dataclasses.field(default_factory=list)  # recovery.RecoveryStep, in the order they ran
    warnings: list[str] = dataclasses.field(default_factory=list)  # calibration guards (calibration.guards)


def calibrate(
    model: Model,
    data: Any = None,
    *,
    eval_data: Any = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: bool = True,
    options: CalibrationOptions | None = None,
    targets: Sequence[Target] | None = None,
    **keywords: Any,
) -> CalibrateResult:
    """Calibrate ``model`` on ``data`` and return the plan (see ``mpcompile calibrate --help``).

    Keywords are ``CalibrationOptions`` fields. ``precision="auto"`` searches the plan with
    the most INT8 layers whose ``metric`` on ``eval_data`` (default: the calibration data)
    drops at most ``max_accuracy_drop``. ``input_shapes`` freezes dynamic input dimensions at
    import (shape subgraphs fold away). ``targets`` are the backends the plan is for: the auto
    search plans under their constraints and measures their legalized plans.
    """
    opts = CalibrationOptions.build(options, keywords)
    recover = parse_recover(opts.recover)
    graph = as_graph(model, input_shapes, [data, eval_data] if opts.preprocess is None else None)
    config = opts.plan_config()
    pins: dict[str, Any] = {}
    if opts.overrides is not None:
        from mpcompile.planning.overrides import check_tensor_names, precision_overrides, read_overrides

        pins = read_overrides(opts.overrides)
        check_tensor_names(graph, pins, str(opts.overrides))  # before calibrating, not after
        config = dataclasses.replace(config, overrides=config.overrides + precision_overrides(pins))
    if graph.metadata.get("mpcompile.policy") == "qdq-import" and opts.precision == "int8" and data is None and opts.stats is None:
        # A QDQ model (QAT, another quantizer) already is a plan: keep its numbers exactly.
        return CalibrateResult(graph, None, config)
    graph, recovery = prepare_graph(graph, recover)  # FP32-preserving: calibration sees the transformed graph
    integer_policy = opts.precision in ("int8", "int16", "mixed", "auto")
    needs_stats = integer_policy or opts.precision in ("fp16", "bf16") or any(o.precision.is_integer for o in config.overrides)
    method_options = dict(opts.method_options or {})
    result: CalibrationResult | None = None
    if isinstance(opts.stats, CalibrationResult):
        result = opts.stats.with_method(opts.method, **method_options)
    elif opts.stats is not None:
        result = CalibrationResult.load(opts.stats).with_method(opts.method, **method_options)
    elif needs_stats and (data is not None or integer_policy):
        dataset = open_data(graph, data, opts.preprocess)
        # A uniform integer plan annotates only tensors next to integer nodes: observe just those
        # (MiniLM: GELU's float interior is a quarter of the values). Saved statistics stay complete.
        uniform = opts.precision in ("int8", "int16") and opts.save_stats is None
        result = calibrate_graph(
            graph,
            dataset,
            method=opts.method,
            method_options=method_options,
            batch_size=opts.batch_size,
            samples=opts.samples,
            nan_policy=opts.nan_policy,
            progress=progress,
            needed=tensors_next_to_integer_nodes(graph, config) if uniform else None,
        )
    auto = None
    if opts.precision == "auto":
        from mpcompile.execution import open_executor
        from mpcompile.planning.auto import auto_plan, warn_without_held_out_data

        if result is None:
            raise DataError(f"--precision auto on model {graph.name!r} needs calibration data (--data) or --stats")
        if eval_data is None:
            warn_without_held_out_data()
        evaluation = open_data(graph, eval_data if eval_data is not None else data, opts.preprocess)
        latency = opts.objective == "latency"
        if latency and not targets:
            raise PlanError("--objective latency times the plans on a backend: compile with --backend NAME")
        sample = next(iter(evaluation.batches(1, limit=1))) if latency else None
        cost = objective.LayerCost(targets[0], sample) if latency else None
        with open_executor(opts.workers, opts.ray) as executor:
            auto = auto_plan(graph, result, config, evaluation, metric=opts.metric, max_drop=opts.max_accuracy_drop,
                             metric_fn=opts.metric_fn, samples=opts.samples or 256, batch_size=opts.batch_size,
                             progress=progress, executor=executor, targets=targets,
                             extra_rows=objective.EXTRA_ROWS if latency else 0, propose=cost)
        if latency:
            objective.fastest_within_budget(auto, list(targets), sample, cost)
        plan = auto.plan
    else:
        plan = make_plan(graph, result, config)
    _pin(plan, pins, opts.overrides)
    if recover and data is not None and any(n.precision is not None and n.precision.is_integer for n in plan.nodes):
        batches = list(open_data(graph, data, opts.preprocess).batches(min(opts.batch_size, 8), limit=RECOVERY_SAMPLES))
        plan, steps = refine_plan(plan, recover, batches)
        recovery += steps
    messages = guards.check(plan, result)
    guards.warn(messages)
    if opts.save_stats is not None and result is not None:
        result.save(opts.save_stats)  # once the plan stands: a run that fails leaves no cache behind
    return CalibrateResult(plan, result, config, auto, recovery, messages)


def _pin(plan: Graph, pins: dict[str, Any], source: Any) -> None:
    if pins.get("tensors"):
        from mpcompile.planning.overrides import apply_tensor_pins

        apply_tensor_pins(plan, pins, str(source))


# ============================================================================ lower
def _stem(graph: Graph) -> str:
    source = graph.metadata.get("source")
    return Path(source).stem if source else (graph.name or "model")


def _refuse_if_none_can_run(graph: Graph, targets: Sequence[Target]) -> None:
    """Before any calibration: when no requested backend can run the model at all, say why now."""
    refusals = [unsupported_ops(graph, t.backend) for t in targets]
    if refusals and all(refusals):
        raise UnsupportedOperatorError("; ".join(r for r in refusals if r))


def _lower_all(targets: Sequence[Target], plan: Graph, out_dir: Path, stem: str, progress: bool = False) -> dict[str, LowerResult]:
    from mpcompile.progress import progress_bar

    results = {}
    with progress_bar(progress and len(targets) > 1, total=len(targets), description="lowering", unit="backends") as bar:
        for target in targets:
            results[target.name] = lower_target(target, plan, out_dir, stem)
            bar.advance()
    return results


def _relocate(results: Mapping[str, LowerResult], tmp: Path, out: Path) -> None:
    """Point artifacts at their final location after the staging folder moved."""
    for r in results.values():
        if r.artifact is not None and r.artifact.path.is_relative_to(tmp):  # not a user-given artifact
            r.artifact.path = out / r.artifact.path.relative_to(tmp)
            r.artifact.files = [out / f.relative_to(tmp) for f in r.artifact.files]


def exit_code(results: Mapping[str, LowerResult], report: ConformanceReport | None) -> int:
    if any(not r.ok for r in results.values()):
        return EXIT_BACKEND_FAILED
    if report is not None and not report.passed:
        return EXIT_NONCONFORMING
    return EXIT_OK


def lower(
    plan: Model,
    backends: Sequence[str] | None = None,
    out_dir: str | os.PathLike = "mpcompile-out",
    *,
    stem: str | None = None,
    backend_options: BackendOptionValues | None = None,
) -> dict[str, LowerResult]:
    """Legalize and lower a plan for each backend into ``out_dir`` (with ``manifest.json``).

    ``backend_options`` maps a backend name to its options (``{"tflite": {"io": "int8"}}``);
    an unknown key or a wrong type raises ``BackendOptionError`` before anything is written.
    A backend that cannot lower the plan has ``error`` set on its result; the others are written.
    """
    check_output_dir(out_dir)
    targets, _ = resolve_targets(list(backends) if backends else None, backend_options)
    graph = as_graph(plan)
    if not graph.is_annotated:
        raise PlanError(f"{plan}: not a plan; run `mpcompile calibrate` first (or use `mpcompile compile`)")
    _refuse_if_none_can_run(graph, targets)
    # A plan read from the output folder (``lower out/plan.onnx -o out``) is an input, never stale output.
    keep = [] if isinstance(plan, Graph) else [plan]
    with staging_dir(out_dir, keep=keep) as tmp:
        results = _lower_all(targets, graph, tmp, stem or _stem(graph))
        _write_manifest(tmp, graph, results, model_path=None, extra={})
    _relocate(results, tmp, Path(out_dir))
    return results


def _write_manifest(
    out: Path, plan: Graph, results: Mapping[str, LowerResult], model_path: str | None, extra: dict[str, Any]
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
                "precision": r.precision.to_dict() if r.precision else None,
                "precision_note": r.precision_note(),
                "speed_warning": r.speed_warning(),
                # tensor_map is runner plumbing (IR name -> artifact tensor), too bulky for a manifest
                "metadata": {k: v for k, v in r.artifact.metadata.items() if k != "tensor_map"},
                "lower_seconds": round(r.seconds, 4),
            }
            for name, r in results.items()
            if r.artifact is not None
        },
        "failed": {name: r.error for name, r in results.items() if not r.ok},
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
    results: dict[str, LowerResult]
    manifest_path: Path
    timings: dict[str, float]
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    conformance: ConformanceReport | None = None
    stats: CalibrationResult | None = None
    auto: Any = None  # AutoPlanResult for precision="auto"

    @property
    def artifacts(self) -> dict[str, Artifact]:
        return {k: r.artifact for k, r in self.results.items() if r.artifact is not None}

    @property
    def deviations(self) -> dict[str, list[Deviation]]:
        return {k: r.deviations for k, r in self.results.items() if r.ok}

    @property
    def failures(self) -> dict[str, str]:
        """Backends that produced no artifact, and why."""
        return {k: r.error for k, r in self.results.items() if r.error is not None}

    @property
    def exit_code(self) -> int:
        return exit_code(self.results, self.conformance)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())


def compile(  # noqa: A001 - the natural name for a compiler's entry point
    model: str | os.PathLike,
    data: Any = None,
    backends: Sequence[str] | None = None,
    out_dir: str | os.PathLike = "mpcompile-out",
    *,
    conform: bool = False,
    eval_data: Any = None,
    backend_options: BackendOptionValues | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: bool = True,
    options: CalibrationOptions | None = None,
    **keywords: Any,
) -> CompileResult:
    """Import → calibrate → plan → legalize → lower for each backend; optionally run conformance.

    Keywords are ``CalibrationOptions`` fields; ``backend_options`` maps a backend name to its
    options. Writes ``out_dir/plan.onnx``, one folder per backend that lowered, and
    ``out_dir/manifest.json`` (``failed`` lists the backends that could not, with the reason).
    Nothing is written if calibration or the inputs fail. ``result.exit_code`` is the CLI's.
    """
    opts = CalibrationOptions.build(options, keywords)
    check_output_dir(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    targets, skipped = resolve_targets(list(backends) if backends else None, backend_options)
    graph = as_graph(model, input_shapes, [data, eval_data] if opts.preprocess is None else None)
    timings["import"] = time.perf_counter() - t0
    _refuse_if_none_can_run(graph, targets)
    t1 = time.perf_counter()
    calibrated = calibrate(graph, data, eval_data=eval_data, progress=progress, options=opts, targets=targets)
    timings["calibrate"] = time.perf_counter() - t1
    plan = calibrated.plan
    plan.metadata.setdefault("source", str(model))
    out = Path(out_dir)
    report = None
    with staging_dir(out) as tmp:
        plan_path = serde.save_plan(plan, tmp / "plan.onnx")
        results = _lower_all(targets, plan, tmp, _stem(graph), progress)
        for name, r in results.items():
            timings[f"lower:{name}"] = r.seconds
        extra: dict[str, Any] = {
            "plan": "plan.onnx",
            "policy": dataclasses.asdict(calibrated.config) | {
                "overrides": [f"{o.pattern}={o.precision.value}" for o in calibrated.config.overrides],
                "activation_type": calibrated.config.activation_type.value,
            },
            "calibration": None if calibrated.stats is None else {
                "method": calibrated.stats.method, "options": calibrated.stats.options,
                "samples": calibrated.stats.samples, "seconds": round(calibrated.stats.seconds, 4),
            },
            "skipped": {s.name: s.reason for s in skipped},
        }
        if calibrated.warnings:
            extra["warnings"] = list(calibrated.warnings)
        if calibrated.recovery:
            extra["recovery"] = [step.to_dict() for step in calibrated.recovery]
        if calibrated.auto is not None:
            extra["auto"] = calibrated.auto.summary()
        if conform and any(r.ok for r in results.values()):
            t2 = time.perf_counter()
            check_data = eval_data if eval_data is not None else data
            report = check_artifacts(
                plan, results, {t.name: t for t in targets}, open_data(graph, check_data, opts.preprocess),
                samples=opts.samples, batch_size=opts.batch_size, progress=progress,
            )
            timings["conform"] = time.perf_counter() - t2
            report.auto = extra.get("auto")
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
        results=results,
        manifest_path=out / manifest_path.name,
        timings=timings,
        skipped=skipped,
        conformance=report,
        stats=calibrated.stats,
        auto=calibrated.auto,
    )


# ============================================================================ conform
def conform(
    model: Any,
    backends: Sequence[str] | None = None,
    data: Any = None,
    *,
    calibration_data: Any = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    per_layer: bool = False,
    localize: bool = False,
    reproducer_dir: str | os.PathLike | None = None,
    tolerances: Tolerances | None = None,
    artifacts: Mapping[str, str | os.PathLike] | None = None,
    out_dir: str | os.PathLike | None = None,
    reference_engine: str = "onnxruntime",
    backend_options: BackendOptionValues | None = None,
    progress: bool = False,
    options: CalibrationOptions | None = None,
    **keywords: Any,
) -> ConformanceReport:
    """Conformance of ``model`` (a plan, or a model calibrated on ``calibration_data or data``).

    Each backend lowers the plan into ``out_dir`` (default: a temporary folder, removed
    afterwards) or is held to the given ``artifacts[backend]``; then every artifact and the
    reference run on ``data``. A backend that cannot lower is reported with its reason.

    ``localize``: for each backend that fails, bisect over sub-models of its legalized plan for
    the first tensor it computes beyond tolerance (``conformance/localize.py``); with
    ``reproducer_dir``, a minimal reproducer of each is written to ``reproducer_dir/<backend>/``.
    """
    opts = CalibrationOptions.build(options, keywords)
    targets, _ = resolve_targets(list(backends) if backends else None, backend_options)
    graph = as_graph(model, input_shapes)
    if not graph.is_annotated:
        graph = calibrate(graph, calibration_data if calibration_data is not None else data, progress=False,
                          options=opts).plan
    _refuse_if_none_can_run(graph, targets)
    dataset = open_data(graph, data, opts.preprocess)
    if out_dir is not None:
        check_output_dir(out_dir)
    # Without out_dir the artifacts live in a scratch folder that is always removed.
    with staging_dir(out_dir) if out_dir is not None else scratch_dir("mpcompile-conform-") as work:
        lowered: dict[str, LowerResult] = {}
        for target in targets:
            if artifacts and target.name in artifacts:
                lowered[target.name] = _given_artifact(target, graph, Path(artifacts[target.name]))
            else:
                lowered[target.name] = lower_target(target, graph, work, "model")
        report = check_artifacts(
            graph, lowered, {t.name: t for t in targets}, dataset, samples=opts.samples, batch_size=opts.batch_size,
            per_layer=per_layer, tolerances=tolerances, reference_engine=reference_engine, progress=progress,
        )
        if localize:
            _localize_failures(report, lowered, {t.name: t for t in targets}, dataset, opts, tolerances,
                               reference_engine, reproducer_dir, progress)
    if out_dir is not None:
        _relocate(lowered, work, Path(out_dir))
        paths = {r.backend: str(r.artifact.path) for r in lowered.values() if r.artifact is not None}
        for backend_report in report.backends:
            backend_report.artifact = paths.get(backend_report.backend, backend_report.artifact)
    return report


#: Samples each localization probe runs: enough to show a divergence the full comparison saw.
LOCALIZE_SAMPLES = 32


def _localize_failures(report: ConformanceReport, lowered: Mapping[str, LowerResult], targets: Mapping[str, Target],
                       dataset: Any, opts: CalibrationOptions, tolerances: Tolerances | None,
                       reference_engine: str, reproducer_dir: str | os.PathLike | None, progress: bool) -> None:
    """``--localize``: the first diverging tensor of every failing backend, found on sub-models of its plan."""
    from mpcompile.conformance.localize import localize
    from mpcompile.progress import progress_bar

    # Out of tolerance end to end, even when the kernel rule passes it: where the gap starts is still worth showing.
    failing = [b for b in report.backends if b.error is None and (not b.passed or b.end_to_end_failures)]
    if not failing:
        return
    samples = min(opts.samples or LOCALIZE_SAMPLES, LOCALIZE_SAMPLES)
    batch_size = common_batch_size((lowered[b.backend].plan for b in failing), min(opts.batch_size, samples))
    batches = list(dataset.batches(batch_size, limit=samples))
    if reproducer_dir is not None:
        check_output_dir(reproducer_dir)
    staging = staging_dir(reproducer_dir) if reproducer_dir is not None else contextlib.nullcontext(None)
    with staging as repro_root, scratch_dir("mpcompile-localize-") as work, \
            progress_bar(progress, total=None, description="localize", unit="sub-model runs") as bar:
        for backend_report in failing:
            result = lowered[backend_report.backend]
            outputs = backend_report.end_to_end_failures
            for output in outputs or list(backend_report.outputs)[:1]:
                found = localize(
                    targets[backend_report.backend], result.plan, output, batches, tolerances=tolerances,
                    engine=reference_engine, work=Path(work) / backend_report.backend,
                    reproducer_dir=None if repro_root is None else Path(repro_root) / backend_report.backend,
                    on_probe=lambda: bar.advance(1),
                )
                if found.reproducer is not None:
                    found.reproducer = str(Path(reproducer_dir) / Path(found.reproducer).relative_to(repro_root))
                backend_report.localization.append(found.to_dict())
                backend_report.localization_lines += found.lines()


def _given_artifact(target: Target, plan: Graph, path: Path) -> LowerResult:
    """A user-supplied artifact, held to the legalized plan with the tensor names it carries."""
    shaped, deviations = shaped_for(target, plan)
    legal, legalized = target.backend.legalize(shaped, target.options)
    deviations += legalized
    if not path.is_file():
        return LowerResult(target.name, None, legal, deviations, 0.0,
                           f"artifact {path} for backend {target.name!r} does not exist (check --artifact)")
    return LowerResult(target.name, Artifact(target.name, path, [path]), legal, deviations, 0.0, given=True)
