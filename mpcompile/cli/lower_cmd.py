"""``mpcompile lower``: lower a saved plan to backends."""

from __future__ import annotations

import click

from mpcompile.cli.options import EXIT_CODES_HELP, backend_option, backend_options, print_lowering


@click.command("lower", epilog=EXIT_CODES_HELP)
@click.argument("plan", type=click.Path(dir_okay=False))
@backend_option
@click.option("-o", "--output-dir", "out_dir", default="mpcompile-out", show_default=True, type=click.Path(file_okay=False))
def lower_command(plan: str, backends: tuple[str, ...], out_dir: str, backend_option_items: tuple[str, ...]) -> None:
    """Lower PLAN (written by `mpcompile calibrate` or `compile`) to each --backend.

    Each backend first legalizes the plan to what it can run; every change is recorded
    as a deviation in OUT/manifest.json. Each backend is lowered on its own.

    \b
    Examples:
      mpcompile lower plan.onnx --backend tflite -o out/
      mpcompile lower plan.onnx --backend tflite --backend-option tflite.io=int8 -o out/
      mpcompile lower plan.onnx --backend tensorrt --backend-option tensorrt.onnx_only=true -o out/
    """
    from mpcompile.pipeline import exit_code, lower

    results = lower(plan, list(backends) or None, out_dir, backend_options=backend_options(click.get_current_context().params))
    print_lowering(results, deviations_shown=20)
    raise SystemExit(exit_code(results, None))
