"""Option groups shared by several commands (one definition, so help texts never drift)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from mpcompile.planning.config import POLICIES

F = Callable[..., Any]


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for d in reversed(decorators):
            func = d(func)
        return func

    return apply


def data_options(required: bool = False) -> Callable[[F], F]:
    return _stack(
        click.option(
            "--data",
            "data",
            required=required,
            help="Calibration data: an .npz keyed by input names (first axis = samples), a .npy, a folder of "
            ".npy/.npz files, an image folder (with --preprocess), or module:function yielding feed dicts.",
        ),
        click.option(
            "--preprocess",
            default=None,
            help="Image-folder preprocessing, e.g. 'resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=NCHW'.",
        ),
        click.option("--samples", type=click.IntRange(min=1), default=None, help="Use at most N samples."),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
            help="Samples read per batch. A batch whose exposed activations exceed 64 MiB runs in slices "
                 "(same statistics, less memory).",
        ),
    )


def _dim(text: str) -> int | None:
    """One ``--input-shape`` dimension: a positive size, or ``-1``/``?`` to keep the model's own."""
    if text.strip() in ("-1", "?"):
        return None
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_input_shapes(items: tuple[str, ...]) -> dict[str, tuple[int | None, ...]] | None:
    """``NAME=1x3x224x224`` (repeatable) -> {name: dims}; ``-1`` or ``?`` keeps that dimension dynamic."""
    shapes: dict[str, tuple[int | None, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            values = tuple(_dim(d) for d in dims.lower().split("x"))
        except ValueError:
            values = ()
        if not sep or not name or not values:
            raise click.BadParameter(
                f"{item!r} must look like NAME=1x3x224x224 (positive sizes; -1 or ? keeps a dimension dynamic)",
                param_hint="--input-shape",
            )
        shapes[name] = values
    return shapes or None


input_shape_option = click.option(
    "--input-shape",
    "input_shape",
    multiple=True,
    metavar="NAME=DIMS",
    help="Freeze a dynamic input shape at import, e.g. --input-shape input_ids=1x32 (shape subgraphs then fold away; "
    "needed for TFLite on models with dynamic-shape arithmetic). Any dynamic, -1 or 0 dimension the model stores can be "
    "frozen; -1 or ? keeps one dynamic (x=-1x3x48x192).",
)

calibration_options = _stack(
    input_shape_option,
    click.option(
        "--method",
        type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
        default="minmax",
        show_default=True,
        help="How activation ranges are chosen from the observed values.",
    ),
    click.option("--percentile", type=float, default=None, help="Percentile for --method percentile (default 99.999)."),
    click.option(
        "--precision",
        type=click.Choice(list(POLICIES)),
        default="int8",
        show_default=True,
        help="Precision policy: uniform int8/int16 (16-bit activations, 8-bit weights), fp16, bf16, fp32, or mixed (int8 plus --keep).",
    ),
    click.option(
        "--keep",
        multiple=True,
        metavar="PATTERN=PRECISION",
        help="Run matching nodes (name glob or op type) at a precision, e.g. --keep Softmax=fp32 --keep 'fc*=int16'. Repeatable.",
    ),
    click.option(
        "--overrides",
        type=click.Path(dir_okay=False),
        default=None,
        help="A plan-overrides file (JSON or YAML): precisions per node/op type, pinned ranges or scales per tensor.",
    ),
    click.option("--activation-type", type=click.Choice(["int8", "uint8", "int16"]), default="int8", show_default=True),
    click.option("--symmetric/--asymmetric", default=False, show_default=True, help="Activation ranges symmetric around 0 (zero-point 0)."),
    click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales per output channel or one per tensor."),
    click.option("--weight-method", type=click.Choice(["minmax", "mse"]), default="minmax", show_default=True),
    click.option("--nan-policy", type=click.Choice(["error", "ignore"]), default="error", show_default=True, help="What to do with NaN/Inf activations."),
    click.option("--recover", default=None, metavar="NAMES",
                 help="Accuracy recovery that changes only weights, biases and scales: none, all, or names joined by '+' "
                      "(fold_scalars, equalize, rounding, bias_correction); plan transforms are kept only where they "
                      "raise the output SQNR on the calibration data (the manifest records each one's effect)."),
)


auto_options = _stack(
    click.option("--metric", default="auto", show_default=True, metavar="METRIC|OUTPUT=METRIC,...",
                 help="--precision auto: what to keep within budget, per output. auto picks per output: top1 "
                      "(argmax agreement) for class distributions, sequence (argmax per position, CTC-collapsed) "
                      "for [N, T, classes], channels (noise per last-axis channel) for outputs mixing magnitudes "
                      "such as boxes and scores, sqnr for one value per sample, else cosine. Also mse. A metric "
                      "that cannot see a change in an output is refused with the reason."),
    click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=0.01, show_default=True,
                 help="--precision auto: allowed drop in the metric's own units (0.005 = half a point of top-1)."),
    click.option("--metric-fn", default=None, metavar="MODULE:FUNCTION",
                 help="--precision auto: custom score fn(fp32_outputs, outputs) -> float, higher is better."),
    click.option("--objective", type=click.Choice(["int8", "latency"]), default="int8", show_default=True,
                 help="--precision auto: int8 keeps the plan with the most INT8 MACs within budget; latency also "
                      "measures plans with more float (and the float plan), lowers each for the first --backend, "
                      "times it there at batch 1 and keeps the fastest within budget (the Pareto table shows the "
                      "times). Which groups those plans promote: where the backend can profile per layer (onnxruntime, "
                      "openvino), the ones measured slower in INT8 than in float, largest loss first; else in accuracy "
                      "order. Fewer INT8 MACs can be faster on small CNNs."),
)


def _check_ray(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--ray`` without Ray installed: a one-line error with the install hint, before any work."""
    if value:
        from mpcompile.execution.ray_backend import import_ray

        import_ray()
    return value


executor_options = _stack(
    click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Run the per-layer sensitivity runs and the --precision auto candidate evaluations on N local "
                      "worker processes (each ORT session then uses cores/N threads). Default: sequential, in this "
                      "process. The results are identical whatever N."),
    click.option("--ray", "ray", default=None, metavar="ADDRESS", callback=_check_ray,
                 help="Run them on a Ray cluster instead: 'local' starts one here (--workers CPUs, default all), "
                      "anything else is an address for ray.init (auto, HEAD:6379, ray://HEAD:10001). "
                      "Needs pip install 'mpcompile[ray]'; see docs/ray.md."),
)


def method_options(method: str, percentile: float | None) -> dict[str, Any]:
    if percentile is not None:
        if method != "percentile":
            raise click.BadParameter("--percentile only applies to --method percentile", param_hint="--percentile")
        return {"percentile": percentile}
    return {}


backend_option = _stack(
    click.option(
        "--backend",
        "backends",
        multiple=True,
        help="Backend to target (repeatable), or 'all'. Default: every available backend (see `mpcompile backends`).",
    ),
    click.option(
        "--backend-option",
        "backend_option_items",
        multiple=True,
        metavar="BACKEND.KEY=VALUE",
        help="An option of one backend, e.g. tflite.io=int8 or tensorrt.onnx_only=true (repeatable). "
        "`mpcompile backends BACKEND` lists a backend's options with types and defaults.",
    ),
)


def backend_options(params: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``--backend-option`` items as ``{backend: {key: value}}`` (values are validated by each backend)."""
    from mpcompile.backends.options import parse_assignments

    return parse_assignments(params.get("backend_option_items", ()))


#: The exit codes of compile, lower and conform, for their --help.
EXIT_CODES_HELP = """\b
Exit codes:
  0  every requested backend produced an artifact (that conforms, when conformance ran)
  1  every artifact was written, and at least one is out of tolerance
  2  bad input (model, data, plan, option): nothing was written
  3  at least one backend could not produce an artifact (the others were written;
     the reasons are printed and in manifest.json under "failed")
  4  conform --max-accuracy-drop: every backend equals the plan, but the plan's
     accuracy cost against FP32 exceeds the budget"""


#: CLI parameters that map one to one onto ``pipeline.calibrate``/``compile`` keywords.
_PASSTHROUGH = (
    "precision", "activation_type", "symmetric", "per_channel", "weight_method", "keep", "batch_size", "samples",
    "nan_policy", "preprocess", "metric", "max_accuracy_drop", "metric_fn", "objective", "overrides", "workers", "ray",
    "recover",
)


def calibration_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a command's click parameters into keyword arguments of the pipeline's calibrate/compile."""
    kwargs = {name: params[name] for name in _PASSTHROUGH if name in params}
    kwargs["method"] = params["method"]
    kwargs["method_options"] = method_options(params["method"], params.get("percentile"))
    kwargs["input_shapes"] = parse_input_shapes(params.get("input_shape", ()))
    kwargs["progress"] = not params.get("quiet", False)
    return kwargs


def print_lowering(results: Any, deviations_shown: int = 0) -> None:
    """One line per backend: its artifact (and how many deviations), or why it produced none."""
    for name, r in results.items():
        if r.artifact is None:
            click.echo(f"{name}: FAILED: {r.error}", err=True)
            continue
        devs = r.deviations
        click.echo(f"{name}: {r.artifact.path}" + (f"  ({len(devs)} deviation(s) from the plan, see manifest)" if devs else ""))
        if r.precision is not None:
            click.echo(f"    {r.precision_note()}")
        for d in devs:  # frozen input dims change how the artifact may be fed: always said
            if d.kind == "shapes" and d not in devs[:deviations_shown]:
                click.echo(f"    {d}")
        for d in devs[:deviations_shown]:
            click.echo(f"    {d}")
        if deviations_shown and len(devs) > deviations_shown:
            click.echo(f"    … {len(devs) - deviations_shown} more in manifest.json")
        warning = r.speed_warning()
        if warning:  # an estimate that this artifact may not beat FP32 (`--bench` measures it)
            click.echo(f"    ! speed: {warning}")
        for key, value in r.artifact.metadata.items():
            if key.startswith("trtexec") and deviations_shown:
                click.echo(f"    {key}: {value}")
