"""The HTML conformance report: a jinja2 template (``templates/``) with matplotlib charts inline.

Self-contained (no scripts, no external files): it opens in any browser, offline. Links to the
artifacts are relative to the report's folder when they live under it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpcompile.conformance import charts

if TYPE_CHECKING:
    from mpcompile.conformance.report import ConformanceReport


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mpcompile.conformance", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(fmt=_fmt, pct=_pct)
    return env


def _fmt(x: object, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{x:.{digits}g}"
    return str(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


def _charts(report: ConformanceReport) -> dict[str, Any]:
    rows = [("plan", report.plan_precisions)] if report.plan_precisions else []
    rows += [(b.backend, b.node_precisions) for b in report.backends if b.node_precisions]
    histograms = {
        b.backend: {name: charts.lsb_histogram(f"{b.backend}: {name}, |diff| in LSB", acc.lsb_counts)
                    for name, acc in b.outputs.items() if acc.quantized}
        for b in report.backends
    }
    def bars(title: str, accumulators: dict) -> str:
        quantized = {k: a for k, a in accumulators.items() if a.quantized}
        tolerance = max((a.tolerance_lsb for a in quantized.values() if a.tolerance_lsb is not None), default=None)
        return charts.layer_bars(title, [(k, a.max_lsb or 0.0) for k, a in quantized.items()], tolerance, "LSB")

    layers = {b.backend: bars(f"{b.backend}: max |diff| per quantized tensor", b.per_layer)
              for b in report.backends if b.per_layer}
    kernels = {b.backend: bars(f"{b.backend}: max |diff| per quantized tensor, each from the plan's exact inputs",
                               b.kernels.tensors)
               for b in report.backends if b.kernels is not None and b.kernels.tensors}
    auto, bench = report.auto, report.bench
    return {"available": charts.available(), "precision_map": charts.precision_map(rows),
            "histograms": histograms, "layers": layers, "kernels": kernels,
            "pareto": charts.pareto(auto["pareto"], auto["max_accuracy_drop"], auto.get("chosen")) if auto else "",
            "sensitivity": charts.layer_bars(
                "auto search: output noise removed by promoting each group alone",
                [(g["nodes"][0] + (f" +{len(g['nodes']) - 1}" if len(g["nodes"]) > 1 else ""), g["gain"])
                 for g in auto.get("sensitivity", [])], None, "gain", order="most sensitive first") if auto else "",
            "latency": charts.latency(bench["results"], bench["batches"]) if bench else ""}


def render_html(report: ConformanceReport, path: str | os.PathLike | None = None) -> str:
    folder = Path(path).resolve().parent if path is not None else None

    def link(target: str) -> str:
        if folder is None:
            return target
        try:
            return str(Path(target).resolve().relative_to(folder))
        except ValueError:
            return Path(target).resolve().as_uri()

    return _environment().get_template("conformance.html").render(report=report, charts=_charts(report), link=link)


def bar_chart_page(title: str, ylabel: str, values: list[tuple[str, float]], order: str = "most sensitive first") -> str:
    """A standalone page with one bar chart and its table (``mpcompile sensitivity --html``)."""
    chart = charts.layer_bars(title, values, None, "dB", order=order)
    return _environment().get_template("bars.html").render(title=title, ylabel=ylabel, values=values, chart=chart)
