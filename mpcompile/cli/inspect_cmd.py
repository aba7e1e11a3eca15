"""``mpcompile inspect``: what is in a model or plan file."""

from __future__ import annotations

import json

import click

from mpcompile.ir import serde
from mpcompile.ir.graph import Graph


def _shape(t) -> str:  # noqa: ANN001
    if t.shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"


def describe(graph: Graph) -> dict:
    """A JSON-able summary of a graph, used by ``inspect`` and reports."""
    quantized = [
        {
            "tensor": t.name,
            "qtype": t.quant.qtype.value,
            "granularity": "per-tensor" if t.quant.axis is None else f"per-channel(axis={t.quant.axis})",
            "scale": float(t.quant.scale) if t.quant.axis is None else [float(t.quant.scale.min()), float(t.quant.scale.max())],
            "zero_point": int(t.quant.zero_point) if t.quant.axis is None else "0" if t.quant.symmetric else "per-channel",
            "symmetric": t.quant.symmetric,
            "role": t.quant.provenance.get("role", t.quant.provenance.get("source", ""))
            + (" (float readers: dropped where the backend writes the accumulator to float)"
               if t.quant.provenance.get("readers") == "float" else ""),
        }
        for t in graph.quantized_tensors()
    ]
    return {
        "name": graph.name,
        "opsets": graph.opset_imports,
        "nodes": len(graph.nodes),
        "ops": graph.op_counts(),
        "parameters": graph.parameter_count(),
        "inputs": [{"name": i, "dtype": str(graph.tensor(i).dtype), "shape": _shape(graph.tensor(i))} for i in graph.inputs],
        "outputs": [{"name": o, "dtype": str(graph.tensor(o).dtype), "shape": _shape(graph.tensor(o))} for o in graph.outputs],
        "annotated": graph.is_annotated,
        "quantized_tensors": quantized,
        "precisions": [
            {"node": n.name, "op": n.op_type, "precision": n.precision.value if n.precision else "-", "reason": n.precision_reason}
            for n in graph.nodes
        ],
    }


@click.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--explain", is_flag=True, help="For every node: its precision and why it got it.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect_command(path: str, explain: bool, as_json: bool) -> None:
    """Show PATH (an ONNX model or an mpcompile plan): ops by type, parameter count,
    inputs/outputs with shapes; for a plan, the quantized tensors and node precisions.

    \b
    Examples:
      mpcompile inspect models/mnist_cnn.onnx
      mpcompile inspect plan.onnx --explain
    """
    graph = serde.load_model_or_plan(path)
    info = describe(graph)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    console.print(f"[bold]{path}[/]: graph {info['name']!r}, {info['nodes']} nodes, {info['parameters']:,} parameters, opsets {info['opsets']}")
    io = Table(title="inputs and outputs")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for item in info[kind]:
            io.add_row(kind[:-1], item["name"], item["dtype"], item["shape"])
    console.print(io)
    ops = Table(title="operators")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in info["ops"].items():
        ops.add_row(op, str(count))
    console.print(ops)
    if info["annotated"]:
        q = Table(title=f"quantized tensors ({len(info['quantized_tensors'])})")
        for col in ("tensor", "qtype", "granularity", "scale", "zero-point", "role"):
            q.add_column(col, overflow="fold")
        for row in info["quantized_tensors"]:
            scale = row["scale"] if isinstance(row["scale"], list) else [row["scale"]]
            q.add_row(row["tensor"], row["qtype"], row["granularity"], " … ".join(f"{s:.4g}" for s in scale), str(row["zero_point"]), row["role"])
        console.print(q)
        counts: dict[str, int] = {}
        for p in info["precisions"]:
            counts[p["precision"]] = counts.get(p["precision"], 0) + 1
        console.print("node precisions: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if explain:
        t = Table(title="precision of every node")
        for col in ("node", "op", "precision", "why"):
            t.add_column(col, overflow="fold")
        for p in info["precisions"]:
            t.add_row(p["node"], p["op"], p["precision"], p["reason"] or ("not a plan" if not info["annotated"] else ""))
        console.print(t)
