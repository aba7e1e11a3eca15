"""``mpcompile lower``: lower a saved plan to backends."""

from __future__ import annotations

import click

from mpcompile.cli.options import backend_option


@click.command("lower")
@click.argument("plan", type=click.Path(dir_okay=False))
@backend_option
@click.option("-o", "--output-dir", "out_dir", default="mpcompile-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--onnx-only", is_flag=True, help="TensorRT: write the TensorRT-ready QDQ ONNX and calibration cache without TensorRT.")
def lower_command(plan: str, backends: tuple[str, ...], out_dir: str, onnx_only: bool) -> None:
    """Lower PLAN (written by `mpcompile calibrate` or `compile`) to each --backend.

    Each backend first legalizes the plan to what it can run; every change is recorded
    as a deviation in OUT/manifest.json.

    \b
    Examples:
      mpcompile lower plan.onnx --backend tflite -o out/
      mpcompile lower plan.onnx --backend tensorrt --onnx-only -o out/
    """
    from mpcompile.pipeline import lower

    results = lower(plan, list(backends) or None, out_dir, onnx_only=onnx_only)
    for name, r in results.items():
        click.echo(f"{name}: {r.artifact.path}" + (f"  ({len(r.deviations)} deviation(s))" if r.deviations else ""))
        for d in r.deviations[:20]:
            click.echo(f"    {d}")
        if len(r.deviations) > 20:
            click.echo(f"    … {len(r.deviations) - 20} more in manifest.json")
        for key, value in r.artifact.metadata.items():
            if key.startswith("trtexec"):
                click.echo(f"    {key}: {value}")
