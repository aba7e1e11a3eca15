"""``mpcompile bench``: latency and size of artifacts beside the FP32 model, on the same backend."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from mpcompile.errors import DataError, MpcompileError

MANIFEST = "manifest.json"
PLAN = "plan.onnx"


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@click.option("--baseline", "baselines", multiple=True, type=click.Path(),
              help="The FP32 artifact to compare with, per backend (repeatable). Default: the FP32 model for onnxruntime; "
                   "for other backends the model compiled with --precision fp32 for that backend.")
@click.option("--model", type=click.Path(), default=None,
              help="The FP32 ONNX model (default: the one named in the artifact's manifest.json).")
@click.option("--backend", "backend_name", default=None,
              help="Backend of artifacts without a manifest.json (default: from the file suffix).")
@click.option("--data", default=None,
              help="Inputs (.npz keyed by input names, first axis = samples; any --data source of `compile`). "
                   "Default: MODEL.calib.npz next to the model, else random inputs (static shapes only).")
@click.option("--batch", "batches", multiple=True, type=click.IntRange(min=1), default=(1, 32), show_default=True,
              help="Batch sizes to time (repeatable): latency at 1, throughput at a larger one.")
@click.option("--seconds", type=click.FloatRange(min=0.001), default=2.0, show_default=True,
              help="Measured time per artifact and batch size (warm-up not included).")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True,
              help="Interleaved rounds (artifacts alternate within each round; order reversed every other round).")
@click.option("--backend-option", "backend_option_items", multiple=True, metavar="BACKEND.KEY=VALUE",
              help="A runner option, e.g. onnxruntime.threads=1 (applies to the artifacts and their baseline).")
@click.option("--per-layer", is_flag=True, default=False,
              help="Also profile each artifact and its baseline node by node (the backend's own profiler, at the smallest "
                   "batch) and list the plan nodes that cost most more than in FP32, in µs per run and as a share of the "
                   "artifact's total: where INT8 does not pay. Q/DQ count to the node they feed or come from. ONNX Runtime "
                   "and OpenVINO can; LiteRT's interpreter has no per-op profiler and says so.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the results as JSON.")
def bench_command(artifacts: tuple[str, ...], baselines: tuple[str, ...], model: str | None, backend_name: str | None,
                  data: str | None, batches: tuple[int, ...], seconds: float, rounds: int,
                  backend_option_items: tuple[str, ...], per_layer: bool, json_path: str | None) -> None:
    """Time each ARTIFACT (or every artifact of an output folder) beside its FP32 baseline on the same backend.

    Prints p50/p90 latency per batch size, file size, and the ratio against FP32 (speed × =
    FP32 p50 / artifact p50: above 1 is faster), with its range over the interleaved rounds so
    that noise can be judged, then a warning for each artifact slower than FP32. Every artifact
    runs through its backend's runner, the one conformance uses.

    \b
    Examples:
      mpcompile bench mpcompile-out/mnist_cnn/                  # every artifact of a compile
      mpcompile bench out/onnxruntime/model.qdq.onnx --batch 1 --batch 64
      mpcompile bench out/tflite/model.tflite --baseline fp32/tflite/model.tflite
      mpcompile bench model.qdq.onnx --model model.onnx --data eval.npz --json bench.json
      mpcompile bench mpcompile-out/mnist_cnn/ --batch 1 --per-layer   # which nodes are slower in INT8

    \b
    Exit codes:
      0  every artifact was timed
      2  bad input (missing file, unknown backend, bad option or data)
      3  at least one artifact or baseline could not be run (the others are reported)
    """
    from mpcompile.backends.options import parse_assignments

    options = parse_assignments(backend_option_items)
    report = bench_artifacts(artifacts, baselines, model, backend_name, data, list(batches), seconds, rounds, options,
                             per_layer=per_layer)
    click.echo(report.format_table())
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    raise SystemExit(3 if report.failed else 0)


def bench_output_folder(folder: Path, data: str | None, batches: list[int], seconds: float = 2.0, rounds: int = 10,
                        options: dict[str, dict[str, str]] | None = None):  # noqa: ANN201 - a BenchReport
    """Time every artifact of a ``mpcompile compile`` output folder beside its FP32 baseline and record the
    results in its manifest (``bench``): what ``mpcompile compile --bench`` runs after compiling."""
    report = bench_artifacts((str(folder),), data=data, batches=batches, seconds=seconds, rounds=rounds, options=options)
    manifest_path = Path(folder) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["bench"] = report.to_dict()
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return report


#: the speed check ``compile`` runs by default: seconds timed per artifact (after warm-up) and interleaved rounds,
#: at batch 1 only
QUICK_CHECK = (0.6, 5)


def quick_speed_check(folder: Path, data: str | None, options: dict[str, dict[str, str]] | None = None):  # noqa: ANN201
    """What ``compile`` runs after compiling unless ``--bench`` says otherwise: every artifact of the output folder
    at batch 1 beside its FP32 baseline, briefly (``QUICK_CHECK``); ``BenchReport.speed_lines(1)`` says it."""
    seconds, rounds = QUICK_CHECK
    return bench_output_folder(folder, data, [1], seconds=seconds, rounds=rounds, options=options)


def bench_artifacts(artifacts: tuple[str, ...] | list[str], baselines: tuple[str, ...] = (), model: str | None = None,
                    backend_name: str | None = None, data: str | None = None, batches: list[int] | tuple[int, ...] = (1, 32),
                    seconds: float = 2.0, rounds: int = 10,
                    options: dict[str, dict[str, str]] | None = None, per_layer: bool = False):  # noqa: ANN201 - a BenchReport
    """Time artifacts (files or ``compile`` output folders) beside their FP32 baselines, one backend at a time.

    What ``mpcompile bench`` and ``compile --bench`` run, and the entry point for scripts (``benchmarks/``):
    a baseline not given is the model (for ONNX Runtime) or the model compiled at FP32 for that backend.
    ``per_layer``: also profile each artifact against its baseline per plan node (``bench.profile_layers``)."""
    from mpcompile.bench import measure, profile_layers

    options = options or {}
    with contextlib.ExitStack() as stack:
        subjects, model_path = _subjects(tuple(artifacts), model, backend_name, options)
        subjects += _baselines(subjects, tuple(baselines), model_path, options, stack, data)
        feeds, fixed = _feeds(model_path, subjects, data)
        timed, notes = admitted_batches(list(dict.fromkeys(batches)), fixed)
        report = measure(subjects, feeds, batches=timed, seconds=seconds, rounds=rounds, notes=notes)
        if per_layer:
            report.layers = profile_layers(subjects, feeds(min(timed)), batch=min(timed), plan_nodes=_plan_nodes(subjects))
        return report


def _plan_nodes(subjects: list) -> dict[str, list[str]]:
    """Artifact path -> node names of the plan in its output folder (``plan.onnx`` beside the manifest), where there
    is one: the profile then tells the plan's nodes from those the lowering inserted."""
    from mpcompile.ir import serde

    out: dict[str, list[str]] = {}
    for subject in subjects:
        found = _manifest_for(Path(subject.artifact.path))
        plan = found[0] / PLAN if found is not None else None
        if plan is not None and plan.is_file():
            with contextlib.suppress(Exception):  # unreadable: the profile names the artifact's own nodes
                out[str(subject.artifact.path)] = [n.name for n in serde.read_graph(plan).nodes]
    return out


# ---------------------------------------------------------------------------- what to time
def _manifest_for(path: Path) -> tuple[Path, dict[str, Any]] | None:
    for folder in (path.parent, path.parent.parent):
        candidate = folder / MANIFEST
        if candidate.is_file():
            try:
                return folder, json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
    return None


def _model_from_manifest(folder: Path, manifest: dict[str, Any]) -> Path | None:
    model = manifest.get("model")
    if not model:
        return None
    for candidate in (Path(model), folder / model):
        if candidate.is_file():
            return candidate
    return None


def _backend(name: str, options: dict[str, dict[str, str]]) -> tuple[Any, Any]:
    from mpcompile.backends.registry import get_backend

    backend = get_backend(name)
    return backend, backend.options(options.get(name))


def _by_suffix(path: Path) -> str:
    from mpcompile.backends.registry import discover

    for entry in discover():
        backend = entry.backend
        if entry.available and backend is not None and backend.artifact_suffix and path.name.endswith(backend.artifact_suffix):
            return entry.name
    raise MpcompileError(f"cannot tell which backend runs {path}: no manifest.json beside it; pass --backend")


def _subjects(artifacts: tuple[str, ...], model: str | None, backend_name: str | None,
              options: dict[str, dict[str, str]]) -> tuple[list, Path | None]:
    from mpcompile.backends.base import Artifact
    from mpcompile.bench import Subject

    subjects: list[Subject] = []
    model_path = Path(model) if model else None
    if model_path is not None and not model_path.is_file():
        raise MpcompileError(f"model {model_path} does not exist")
    for item in artifacts:
        path = Path(item)
        if not path.exists():
            raise MpcompileError(f"artifact {path} does not exist")
        if path.is_dir():
            if not (path / MANIFEST).is_file():
                raise MpcompileError(f"{path} is a folder without {MANIFEST}: give artifact files, or an output folder of `mpcompile compile`")
            entries = [(path, json.loads((path / MANIFEST).read_text()), name) for name in
                       json.loads((path / MANIFEST).read_text()).get("backends", {})]
            if not entries:
                raise MpcompileError(f"{path / MANIFEST} lists no artifact")
        else:
            found = _manifest_for(path)
            entries = []
            if found is not None:
                folder, manifest = found
                for name, entry in manifest.get("backends", {}).items():
                    if (folder / entry.get("artifact", "")).resolve() == path.resolve():
                        entries.append((folder, manifest, name))
            if not entries:
                name = backend_name or _by_suffix(path)
                backend, opts = _backend(name, options)
                subjects.append(Subject(str(path), Artifact(name, path, [path]), backend, opts))
                continue
        for folder, manifest, name in entries:
            entry = manifest["backends"][name]
            artifact_path = folder / entry["artifact"]
            backend, opts = _backend(name, options)
            metadata = dict(entry.get("metadata", {}))
            files = [folder / f for f in entry.get("files", [])] or [artifact_path]
            subjects.append(Subject(str(artifact_path), Artifact(name, artifact_path, files, metadata=metadata), backend, opts,
                                    note=str(metadata.get("speed_note", ""))))
            if model_path is None:
                model_path = _model_from_manifest(folder, manifest)
    return subjects, model_path


def _baselines(subjects: list, baselines: tuple[str, ...], model_path: Path | None, options: dict[str, dict[str, str]],
               stack: contextlib.ExitStack, data: str | None = None) -> list:
    from mpcompile.backends.base import Artifact
    from mpcompile.bench import Subject

    given: dict[str, Any] = {}
    backends_used = list(dict.fromkeys(s.backend.name for s in subjects))
    for item in baselines:
        path = Path(item)
        if not path.is_file():
            raise MpcompileError(f"baseline {path} does not exist")
        found = _manifest_for(path)
        name, metadata = None, {}
        if found is not None:
            folder, manifest = found
            for backend_key, entry in manifest.get("backends", {}).items():
                if (folder / entry.get("artifact", "")).resolve() == path.resolve():
                    name, metadata = backend_key, dict(entry.get("metadata", {}))
        if name is None:
            name = backends_used[0] if len(backends_used) == 1 else _by_suffix(path)
        backend, opts = _backend(name, options)
        given[name] = Subject(f"{path}", Artifact(name, path, [path], metadata=metadata), backend, opts, baseline=True)
    out = []
    for name in backends_used:
        if name in given:
            out.append(given[name])
            continue
        backend, opts = _backend(name, options)
        if model_path is None:
            raise MpcompileError(f"no FP32 baseline for {name}: pass --model MODEL.onnx or --baseline PATH")
        if name == "onnxruntime":
            out.append(Subject(str(model_path), Artifact(name, model_path, [model_path]), backend, opts, baseline=True))
            continue
        out.append(_compiled_fp32(name, model_path, options, stack, data))
    return out


def _compiled_fp32(name: str, model_path: Path, options: dict[str, dict[str, str]], stack: contextlib.ExitStack,
                   data: str | None = None) -> Any:
    """The model compiled with --precision fp32 for backend ``name``, in a scratch folder kept while timing.

    ``data`` freezes the dynamic dims it fixes, as it did for the artifacts timed beside it: a backend with static
    shapes cannot lower the model otherwise (PaddleOCR's dynamic H×W on TFLite)."""
    from mpcompile.bench import Subject
    from mpcompile.pipeline import compile as compile_model

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="mpcompile-bench-"))
    result = compile_model(str(model_path), data, backends=[name], out_dir=os.path.join(folder, "fp32"), conform=False,
                           progress=False, precision="fp32", backend_options={name: options[name]} if name in options else None)
    artifact = result.artifacts.get(name)
    if artifact is None:
        raise MpcompileError(f"could not compile the FP32 baseline for {name}: {result.failures.get(name, '?')}")
    backend, opts = _backend(name, options)
    return Subject(f"{model_path.name} fp32 for {name}", artifact, backend, opts, baseline=True)


# ---------------------------------------------------------------------------- what to feed
def admitted_batches(batches: list[int], fixed: int | None) -> tuple[list[int], list[str]]:
    """The batch sizes a model with a fixed batch (``fixed``; None: dynamic) can run, and a note for those left out.

    A model exported with batch 1 fails at batch 32 in every runtime; timing it at its own batch instead says
    what can be said (its latency) without an error per artifact."""
    if fixed is None or all(b == fixed for b in batches):
        return batches, []
    left = [b for b in batches if b != fixed]
    note = (f"batch {', '.join(map(str, left))} not timed: the model's inputs have a fixed batch of {fixed} "
            f"(compile without --input-shape on the batch, or export with a dynamic batch, to time throughput)")
    return [fixed], [note]


def _fixed_batch(graphs: list[Any]) -> int | None:
    """The batch the inputs of these graphs (the model, ONNX artifacts) fix, or None when all are dynamic: the data
    layer's own rule (``effective_batch_size``; a sample axis other than 0, as in LSTM states, included). An artifact
    compiled with ``--input-shape x=1x…`` fixes it though the model does not."""
    from mpcompile.data import effective_batch_size, model_inputs

    unbounded = 2**31
    for graph in graphs:
        size = effective_batch_size(model_inputs(graph), unbounded)
        if size != unbounded:
            return size
    return None


def _feeds(model_path: Path | None, subjects: list, data: str | None):  # noqa: ANN202 - (feeds(batch), fixed batch)
    from mpcompile.bench import tile_batch
    from mpcompile.data import open_data
    from mpcompile.ir import serde

    source = model_path
    if source is None:
        onnx_files = [s.artifact.path for s in subjects if str(s.artifact.path).endswith(".onnx")]
        if not onnx_files:
            raise MpcompileError("cannot tell the model's inputs: pass --model MODEL.onnx")
        source = onnx_files[0]
    try:
        graph = serde.read_graph(source)
    except Exception as exc:  # noqa: BLE001 - a bad model file is bad input
        raise MpcompileError(f"cannot read {source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if data is None and model_path is not None:
        calib = model_path.with_name(model_path.name.removesuffix(".onnx") + ".calib.npz")
        data = str(calib) if calib.is_file() else None
    if data is not None:
        dataset = open_data(graph, data)
        first = next(iter(dataset.batches(64, limit=64)), None)
        if first is None:
            raise DataError(f"data {data} contains no samples")
        feeds = functools.partial(tile_batch, first)
    else:
        feeds = functools.partial(_random_feeds, graph)
    artifacts = []
    for subject in subjects:
        path = Path(subject.artifact.path)
        if path.name.endswith(".onnx") and path != Path(source):
            with contextlib.suppress(Exception):  # unreadable here: its runner reports it
                artifacts.append(serde.read_graph(path))
    return feeds, _fixed_batch([graph, *artifacts])


def _random_feeds(graph: Any, batch: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for name in graph.inputs:
        tensor = graph.tensors[name]
        shape = list(tensor.shape or ())
        if not shape:
            raise DataError(f"input {name!r} has no known shape: pass --data")
        dims = [batch] + [d if isinstance(d, int) and d > 0 else None for d in shape[1:]]
        if any(d is None for d in dims):
            raise DataError(f"input {name!r} has a dynamic dimension besides the batch ({shape}): pass --data")
        dtype = np.dtype(tensor.dtype or np.float32)
        feeds[name] = rng.random(dims).astype(dtype) if dtype.kind == "f" else np.zeros(dims, dtype)
    return feeds
