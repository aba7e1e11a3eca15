"""``mpcompile compile``: the whole job in one command."""

from __future__ import annotations

import click

from mpcompile.cli.options import (
    EXIT_CODES_HELP,
    auto_options,
    backend_option,
    backend_options,
    calibration_kwargs,
    calibration_options,
    data_options,
    executor_options,
    print_lowering,
)


@click.command("compile", epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@backend_option
@data_options()
@calibration_options
@auto_options
@executor_options
@click.option("-o", "--output-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: mpcompile-out/<model name>).")
@click.option("--conform/--no-conform", default=True, show_default=True,
              help="Run the conformance suite on the artifacts (needs evaluation data).")
@click.option("--eval-data", default=None, help="Data for conformance/accuracy (default: <model>.eval.npz next to the model, else --data).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--bench", "bench_batches", multiple=False, is_flag=False, flag_value="1,32", default="quick",
              metavar="[B,B…|quick|off]",
              help="After compiling, time every integer artifact beside its FP32 baseline on the same backend and say "
                   "when it is slower. Default `quick`: batch 1, a few seconds per backend, one line each. `--bench`: "
                   "the full table at batches 1,32 (or the ones given), as `mpcompile bench OUT` does. `off`: no "
                   "timing. Printed and written to the manifest (`bench`).")
@click.option("--bench-seconds", type=click.FloatRange(min=0.001), default=2.0, show_default=True,
              help="With --bench B,B…: timing budget per artifact and batch (10 interleaved rounds).")
def compile_command(model: str, backends: tuple[str, ...], data: str | None, precision: str, conform: bool,
                    eval_data: str | None, out_dir: str | None, bench_batches: str | None, bench_seconds: float,
                    **_rest: object) -> None:
    """Import MODEL, calibrate, plan, and lower the one plan for every backend.

    Writes OUT/plan.onnx (the plan), OUT/<backend>/ (each artifact), OUT/manifest.json
    (artifacts, deviations from the plan, backends that failed and why, library versions,
    hashes, timings) and, with --conform, OUT/conformance.{json,html}. When --data is
    omitted, <model>.calib.npz next to the model is used. Each backend is lowered on its
    own: one that cannot take the model is reported and the others are still written.
    Nothing is written when the model, the data or an option is bad.

    \b
    Examples:
      mpcompile compile models/mnist_cnn.onnx
      mpcompile compile model.onnx --data calib.npz --backend onnxruntime --backend tflite -o out/
      mpcompile compile model.onnx --data calib.npz --method entropy --keep Softmax=fp32
      mpcompile compile model.onnx --precision auto --metric top1 --max-accuracy-drop 0.005
      mpcompile compile model.onnx --backend tflite --backend-option tflite.io=int8
      mpcompile compile model.onnx --backend tensorrt --backend-option tensorrt.onnx_only=true
      mpcompile compile models/mnist_cnn.onnx --backend onnxruntime --bench
    """
    from pathlib import Path

    from mpcompile.pipeline import compile as run_compile
    from mpcompile.pipeline import default_data

    batches = _bench_batches(bench_batches)
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
    out = out_dir or str(Path("mpcompile-out") / Path(model).stem)
    params = click.get_current_context().params
    result = run_compile(model, data, list(backends) or None, out, conform=conform, eval_data=eval_data,
                         backend_options=backend_options(params), **calibration_kwargs(params))
    for skipped in result.skipped:
        click.echo(f"skipped backend {skipped.name}: {skipped.reason}", err=True)
    if result.auto is not None:
        click.echo(result.auto.format_table())
    click.echo(f"plan: {result.plan_path}")
    print_lowering(result.results)
    if result.conformance is not None:
        click.echo(result.conformance.format_text())
        click.echo(f"report: {result.out_dir / 'conformance.html'}")
    click.echo(f"manifest: {result.manifest_path}  (total {result.timings['total']:.2f}s)")
    integer = result.plan is not None and bool(result.plan.quantized_tensors())
    if result.artifacts and (batches or (bench_batches == "quick" and integer)):
        from mpcompile.cli.bench_cmd import bench_output_folder, quick_speed_check

        if batches:
            report = bench_output_folder(result.out_dir, eval_data or data, batches, seconds=bench_seconds,
                                         options=backend_options(params))
            click.echo(report.format_table())
        else:
            report = quick_speed_check(result.out_dir, eval_data or data, backend_options(params))
            click.echo("speed check (batch 1, quick; --bench for the full table, --bench off to skip):")
            click.echo("\n".join(f"    {line}" for line in report.speed_lines(1)))
        if result.conformance is not None:  # the report shows the timings too
            result.conformance.bench = report.to_dict()
            result.conformance.save_html(result.out_dir / "conformance.html")
    raise SystemExit(result.exit_code)


def _bench_batches(value: str | None) -> list[int]:
    """The batch sizes of ``--bench B,B…``; none for ``quick`` and ``off``."""
    if value is None or value in ("quick", "off"):
        return []
    try:
        batches = [int(b) for b in value.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise click.BadParameter(f"{value!r}: give batch sizes as positive integers, e.g. --bench 1,32", param_hint="--bench")
    return batches
