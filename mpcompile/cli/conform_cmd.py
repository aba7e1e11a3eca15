"""``mpcompile conform``: prove that backends compute what the plan says."""

from __future__ import annotations

import click

from mpcompile.cli.options import (
    EXIT_CODES_HELP,
    backend_option,
    backend_options,
    input_shape_option,
    parse_input_shapes,
)


@click.command("conform", epilog=EXIT_CODES_HELP)
@click.argument("model_or_plan", type=click.Path(dir_okay=False))
@backend_option
@click.option("--data", required=True, help="Inputs to run (an .npz keyed by input names; 'labels' adds accuracy).")
@input_shape_option
@click.option("--calibration-data", default=None, help="For a model (not a plan): data to calibrate on (default: --data).")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Use at most N samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--per-layer", is_flag=True, help="Also compare every quantized intermediate tensor and name the first that diverges.")
@click.option("--localize", is_flag=True,
              help="For each failing backend, find the first tensor it computes beyond tolerance by bisecting over "
                   "sub-models of its plan (about log2(tensors) lowerings; works without --per-layer and in bounded "
                   "memory), and print the node, its op, the worst values and a minimal reproducer.")
@click.option("--reproducer-dir", type=click.Path(file_okay=False), default="mpcompile-reproducers", show_default=True,
              help="With --localize: where each backend's reproducer (sub-plan, its inputs, the lowered artifact) goes.")
@click.option("--tolerance", "tolerance", multiple=True, metavar="[TENSOR=]LSB",
              help="Allowed max |diff| in LSB: a default (e.g. 2) or per tensor (logits=3). Defaults: 1, softmax-type outputs 9.")
@click.option("--artifact", "artifacts", multiple=True, metavar="BACKEND=PATH", help="Check an existing artifact instead of lowering.")
@click.option("--reference", "reference_engine", type=click.Choice(["onnxruntime", "onnx-reference"]), default="onnxruntime",
              show_default=True, help="Engine for the fake-quant reference (ORT with all optimizations off, or onnx.reference).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None,
              help="Also judge the plan against FP32: exit 4 when its accuracy drop (on the labels, else top-1 agreement, "
                   "else 1 − cosine) exceeds this. Without it the accuracy cost is shown, never an exit code.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the full report as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Write an HTML report with a per-layer error plot.")
def conform_command(model_or_plan: str, backends: tuple[str, ...], data: str, input_shape: tuple[str, ...],
                    calibration_data: str | None, samples: int | None,
                    batch_size: int, per_layer: bool, localize: bool, reproducer_dir: str, tolerance: tuple[str, ...], artifacts: tuple[str, ...],
                    reference_engine: str, max_accuracy_drop: float | None, quiet: bool, json_path: str | None, html_path: str | None, backend_option_items: tuple[str, ...]) -> None:
    """Lower MODEL_OR_PLAN for each backend, run every artifact and the fake-quant reference
    on the same inputs, and compare them: max |diff| in LSB of each output's scale, share
    beyond tolerance, cosine, SQNR, top-1 agreement, and the accuracy cost against FP32.

    \b
    Examples:
      mpcompile conform plan.onnx --backend onnxruntime --backend tflite --data eval.npz --html report.html
      mpcompile conform plan.onnx --backend onnxruntime --artifact onnxruntime=out/model.qdq.onnx --data eval.npz --per-layer
      mpcompile conform plan.onnx --backend tflite --data eval.npz --localize     # where does it first diverge?
    """
    from mpcompile.conformance import Tolerances
    from mpcompile.errors import MpcompileError
    from mpcompile.pipeline import EXIT_BACKEND_FAILED, EXIT_NONCONFORMING, EXIT_PLAN_COST, conform

    given = {}
    for item in artifacts:
        name, sep, path = item.partition("=")
        if not sep:
            raise MpcompileError(f"--artifact {item!r} must look like BACKEND=PATH")
        given[name] = path
    names = list(backends) or (list(given) if given else None)
    report = conform(
        model_or_plan,
        names,
        data,
        calibration_data=calibration_data,
        input_shapes=parse_input_shapes(input_shape),
        samples=samples,
        batch_size=batch_size,
        per_layer=per_layer,
        localize=localize,
        reproducer_dir=reproducer_dir if localize else None,
        tolerances=Tolerances.parse(tolerance),
        artifacts=given or None,
        reference_engine=reference_engine,
        backend_options=backend_options(click.get_current_context().params),
        progress=not quiet,
    )
    click.echo(report.format_text(max_accuracy_drop))
    if json_path:
        report.save_json(json_path)
        click.echo(f"json report: {json_path}")
    if html_path:
        report.save_html(html_path)
        click.echo(f"html report: {html_path}")
    for name, reason in report.failed.items():
        click.echo(f"{name}: FAILED: {reason}", err=True)
    if report.failed:
        raise SystemExit(EXIT_BACKEND_FAILED)
    if not report.passed:
        raise SystemExit(EXIT_NONCONFORMING)
    if max_accuracy_drop is not None and not report.plan_within(max_accuracy_drop):
        raise SystemExit(EXIT_PLAN_COST)
