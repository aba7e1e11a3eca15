"""``mpcompile calibrate``: run calibration data through a model and write the plan."""

from __future__ import annotations

import click

from mpcompile.cli.options import auto_options, calibration_kwargs, calibration_options, data_options, executor_options


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@data_options()
@calibration_options
@auto_options
@executor_options
@click.option("--eval-data", default=None, help="--precision auto: data to measure the metric on (default: --data).")
@click.option("--for-backend", "for_backends", multiple=True, metavar="BACKEND",
              help="--precision auto: plan for this backend (repeatable): search under its constraints (symmetric "
                   "activations, the float precisions it runs) and measure its legalized plan. `compile` does it for "
                   "its --backend list.")
@click.option("--stats", "stats", type=click.Path(dir_okay=False), default=None, help="Reuse a calibration cache instead of running the model.")
@click.option("--save-stats", type=click.Path(dir_okay=False), default=None, help="Save the calibration cache (JSON) for reuse with --stats.")
@click.option("-o", "--output", default="plan.onnx", show_default=True, type=click.Path(dir_okay=False), help="Where to write the plan.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate_command(model: str, input_shape: tuple[str, ...], data: str | None, preprocess: str | None, samples: int | None, batch_size: int,
                      method: str, percentile: float | None, precision: str, keep: tuple[str, ...], overrides: str | None, activation_type: str,
                      symmetric: bool, per_channel: bool, weight_method: str, nan_policy: str, metric: str,
                      max_accuracy_drop: float, metric_fn: str | None, objective: str, workers: int | None, ray: str | None, recover: str | None,
                      eval_data: str | None, for_backends: tuple[str, ...], stats: str | None, save_stats: str | None, output: str, quiet: bool) -> None:
    """Calibrate MODEL on --data and write the plan (an annotated ONNX file) to -o.

    The FP32 model runs once over the data in ONNX Runtime; every activation streams into
    an observer, so memory does not grow with the number of samples. The plan opens in
    Netron and is what `mpcompile lower` and `mpcompile conform` read.

    \b
    Examples:
      mpcompile calibrate models/mnist_cnn.onnx --data models/mnist_cnn.calib.npz -o plan.onnx
      mpcompile calibrate model.onnx --data calib.npz --method entropy --save-stats stats.json
      mpcompile calibrate model.onnx --stats stats.json --method percentile --percentile 99.99 -o plan.onnx
      mpcompile calibrate model.onnx --data calib.npz --precision auto --metric cosine --max-accuracy-drop 0.01
      mpcompile calibrate model.onnx --data calib.npz --precision auto --workers 2    # same plan, 2 processes
      mpcompile calibrate model.onnx --data calib.npz --precision auto --for-backend tensorrt
    """
    from mpcompile.ir import serde
    from mpcompile.pipeline import calibrate

    params = click.get_current_context().params
    targets = _planning_targets(for_backends) or None
    result = calibrate(model, data, stats=stats, save_stats=save_stats, eval_data=eval_data, targets=targets,
                       **calibration_kwargs(params))
    if result.auto is not None:
        click.echo(result.auto.format_table())
    serde.save_plan(result.plan, output)
    plan = result.plan
    counts: dict[str, int] = {}
    for node in plan.nodes:
        if node.precision is not None:
            counts[node.precision.value] = counts.get(node.precision.value, 0) + 1
    where = f" from {result.stats.samples} samples in {result.stats.seconds:.2f}s ({result.stats.method})" if result.stats else ""
    click.echo(f"wrote plan {output}: {len(plan.quantized_tensors())} quantized tensors, "
               + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f" nodes{where}")



def _planning_targets(names: tuple[str, ...]) -> list:
    """The backends to plan for. Planning reads a backend's capabilities and runs its legalization, never its
    runtime, so a backend whose library is missing here (TensorRT) can still be planned for."""
    from mpcompile.backends.registry import discover
    from mpcompile.backends.targets import Target
    from mpcompile.errors import BackendError

    entries = {e.name: e for e in discover()}
    targets = []
    for name in dict.fromkeys(names):
        entry = entries.get(name)
        if entry is None or entry.backend is None:
            why = "unknown" if entry is None else f"not loadable ({entry.reason})"
            raise BackendError(f"--for-backend {name!r}: backend {why}; installed backends: {', '.join(sorted(entries))}")
        targets.append(Target(entry.backend, entry.backend.options()))
    return targets
