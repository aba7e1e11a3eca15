"""``mpcompile compile``: the whole job in one command."""

from __future__ import annotations

import click

from mpcompile.cli.options import (
    auto_options,
    backend_option,
    calibration_kwargs,
    calibration_options,
    data_options,
)


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@backend_option
@data_options()
@calibration_options
@auto_options
@click.option("--onnx-only", is_flag=True, help="TensorRT: write the TensorRT-ready QDQ ONNX and cache without TensorRT.")
@click.option("-o", "--output-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: mpcompile-out/<model name>).")
@click.option("--conform/--no-conform", default=True, show_default=True,
              help="Run the conformance suite on the artifacts (needs evaluation data).")
@click.option("--eval-data", default=None, help="Data for conformance/accuracy (default: <model>.eval.npz next to the model, else --data).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compile_command(model: str, input_shape: tuple[str, ...], backends: tuple[str, ...], data: str | None, preprocess: str | None, samples: int | None,
                    batch_size: int, method: str, percentile: float | None, precision: str, keep: tuple[str, ...], overrides: str | None,
                    activation_type: str, symmetric: bool, per_channel: bool, weight_method: str, nan_policy: str,
                    metric: str, max_accuracy_drop: float, metric_fn: str | None, onnx_only: bool,
                    out_dir: str | None, conform: bool, eval_data: str | None, quiet: bool) -> None:
    """Import MODEL, calibrate, plan, and lower the one plan for every backend.

    Writes OUT/plan.onnx (the plan), OUT/<backend>/ (each artifact), OUT/manifest.json
    (artifacts, deviations from the plan, library versions, hashes, timings) and, with
    --conform, OUT/conformance.{json,html}. When --data is omitted, <model>.calib.npz
    next to the model is used. Nothing is left behind on failure.

    \b
    Examples:
      mpcompile compile models/mnist_cnn.onnx
      mpcompile compile model.onnx --data calib.npz --backend onnxruntime --backend tflite -o out/
      mpcompile compile model.onnx --data calib.npz --method entropy --keep Softmax=fp32
      mpcompile compile model.onnx --precision auto --metric top1 --max-accuracy-drop 0.005
      mpcompile compile model.onnx --backend tensorrt --onnx-only
    """
    from pathlib import Path

    from mpcompile.pipeline import compile as run_compile
    from mpcompile.pipeline import default_data

    if data is None and precision in ("int8", "int16", "mixed", "auto"):
        found = default_data(model, "calib")
        if found is not None:
            click.echo(f"using calibration data {found} (found next to the model)", err=True)
            data = str(found)
    if conform and eval_data is None:
        found = default_data(model, "eval")
        eval_data = str(found) if found is not None else data
    if conform and eval_data is None:
        click.echo("no evaluation data: skipping conformance (pass --eval-data or --data)", err=True)
        conform = False
    if not backends:
        from mpcompile.backends.registry import discover

        for entry in discover():
            if not entry.available:
                extra = " (use --backend tensorrt --onnx-only to export for building on the device)" if entry.name == "tensorrt" else ""
                click.echo(f"skipping backend {entry.name}: unavailable{extra}", err=True)
    out = out_dir or str(Path("mpcompile-out") / Path(model).stem)
    params = click.get_current_context().params
    result = run_compile(model, data, list(backends) or None, out, conform=conform, eval_data=eval_data,
                         onnx_only=onnx_only, **calibration_kwargs(params))
    if result.auto is not None:
        click.echo(result.auto.format_table())
    click.echo(f"plan: {result.plan_path}")
    for name, artifact in result.artifacts.items():
        devs = result.deviations[name]
        click.echo(f"{name}: {artifact.path}" + (f"  ({len(devs)} deviation(s) from the plan, see manifest)" if devs else ""))
    if result.conformance is not None:
        click.echo(result.conformance.format_text())
        click.echo(f"report: {result.out_dir / 'conformance.html'}")
    click.echo(f"manifest: {result.manifest_path}  (total {result.timings['total']:.2f}s)")
    if result.conformance is not None and not result.conformance.passed:
        raise SystemExit(1)
