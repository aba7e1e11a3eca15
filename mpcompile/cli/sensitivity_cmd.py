"""``mpcompile sensitivity``: which layers hurt when quantized."""

from __future__ import annotations

import click

from mpcompile.cli.options import calibration_kwargs, calibration_options, data_options, executor_options


@click.command("sensitivity")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options(required=True)
@calibration_options
@executor_options
@click.option("--eval-data", default=None, help="Data the sensitivity is measured on (default: --data).")
@click.option("--eval-samples", type=click.IntRange(min=1), default=32, show_default=True,
              help="Samples whose activations are cached for the per-layer runs.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Rows to print.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write every layer as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Write an HTML bar chart.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sensitivity_command(model: str, input_shape: tuple[str, ...], data: str, preprocess: str | None, samples: int | None, batch_size: int, method: str,
                        percentile: float | None, precision: str, keep: tuple[str, ...], overrides: str | None, activation_type: str,
                        symmetric: bool, per_channel: bool, weight_method: str, nan_policy: str, recover: str | None, workers: int | None,
                        ray: str | None, eval_data: str | None,
                        eval_samples: int, top: int, json_path: str | None, html_path: str | None, quiet: bool) -> None:
    """Rank MODEL's layers by the error quantizing each one alone causes (local SQNR of its
    output, from cached FP32 activations: one model run plus one tiny run per layer).

    Low SQNR = sensitive: candidates for --keep NAME=fp16 or for --precision auto.

    The per-layer runs are independent: --workers N spreads them over N processes, --ray
    over a Ray cluster (one progress bar; the numbers are identical to a sequential run).

    \b
    Examples:
      mpcompile sensitivity models/mnist_cnn.onnx --data models/mnist_cnn.calib.npz --html sensitivity.html
      mpcompile sensitivity model.onnx --data calib.npz --workers 2
      mpcompile sensitivity model.onnx --data calib.npz --ray local
    """
    import json
    import math
    import time

    from mpcompile.data import open_data
    from mpcompile.execution import open_executor
    from mpcompile.ir import serde
    from mpcompile.pipeline import calibrate
    from mpcompile.planning.sensitivity import local_sensitivity

    started = time.perf_counter()
    result = calibrate(model, data, **calibration_kwargs(click.get_current_context().params))
    with open_executor(workers, ray) as executor:
        layers = local_sensitivity(result.plan, open_data(result.plan, eval_data or data, preprocess), samples=eval_samples,
                                   batch_size=min(batch_size, 8), progress=not quiet, executor=executor)
    ranked = sorted(layers, key=lambda s: (s.sqnr_db, s.node))
    seconds = time.perf_counter() - started
    click.echo(f"{len(layers)} integer layers of {model}, most sensitive first ({seconds:.1f}s):")
    click.echo(f"  {'SQNR dB':>8}  {'MACs':>12}  op           layer")
    for s in ranked[:top]:
        sq = "inf" if math.isinf(s.sqnr_db) else f"{s.sqnr_db:8.2f}"
        click.echo(f"  {sq:>8}  {s.macs:12,d}  {s.op_type:<12} {s.node}")
    if json_path:
        serde.write_atomic(json_path, json.dumps([s.to_dict() for s in ranked], indent=2).encode())
    if html_path:
        from mpcompile.conformance.html import bar_chart_page

        values = [(s.node, 0.0 if math.isinf(s.sqnr_db) else s.sqnr_db) for s in ranked]
        page = bar_chart_page(f"Layer sensitivity: {model}", "local SQNR (dB), lower = more sensitive", values)
        serde.write_atomic(html_path, page.encode())
        click.echo(f"html: {html_path}")
