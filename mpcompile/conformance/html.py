"""A self-contained HTML conformance report: tables and an inline SVG per-layer error plot."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpcompile.conformance.report import ConformanceReport

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.pass{color:#087f23;font-weight:600}.fail{color:#b00020;font-weight:600}
.small{color:#666;font-size:90%}
"""


def _fmt(x: object, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{x:.{digits}g}"
    return html.escape(str(x))


def bar_chart_page(title: str, ylabel: str, values: list[tuple[str, float]]) -> str:
    """A standalone page with one bar chart (used by ``mpcompile sensitivity``)."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.2f}</td></tr>" for k, v in values)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p class='small'>{html.escape(ylabel)}</p>{_plot(title, values, None, unit='dB')}"
            f"<table><tr><th>layer</th><th>value</th></tr>{rows}</table></body></html>")


def _plot(name: str, values: list[tuple[str, float]], tolerance: float | None, unit: str = "LSB") -> str:
    """Bar chart of one value per layer (max |diff| in LSB, or SQNR), in the given order, labelled."""
    if not values:
        return ""
    labelled = len(values) <= 60
    width, pad, plot_h = 960, 48, 200
    label_h = 150 if labelled else 20
    limit = (tolerance + 0.5) if tolerance is not None else 0.0
    top = max(max(v for _, v in values), limit, 1.0) * 1.15
    bar = (width - 2 * pad) / len(values)
    base = pad + plot_h
    parts = [f'<svg width="{width}" height="{base + label_h + 10}" role="img" aria-label="per-layer values of {html.escape(name)}" font-family="sans-serif">']
    for frac in (0.0, 0.5, 1.0):
        y = base - plot_h * frac
        parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{top * frac:.3g}</text>')
    for i, (label, v) in enumerate(values):
        h = plot_h * max(v, 0.0) / top
        x = pad + i * bar
        over = tolerance is not None and v > limit
        color = "#b00020" if over else "#3b6ea8"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{base - h:.1f}" width="{max(bar - 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{html.escape(label)}: {v:.2f} {unit}</title></rect>"
        )
        if labelled:
            cx = x + bar / 2
            parts.append(f'<text x="{cx:.1f}" y="{base - h - 3:.1f}" font-size="10" text-anchor="middle">{v:.3g}</text>')
            short = label if len(label) <= 28 else "…" + label[-27:]
            parts.append(
                f'<text x="{cx:.1f}" y="{base + 10}" font-size="10" text-anchor="end" '
                f'transform="rotate(-45 {cx:.1f} {base + 10})">{html.escape(short)}</text>'
            )
    if tolerance is not None:
        y = base - plot_h * limit / top
        parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" stroke="#b00020" stroke-dasharray="4"/>')
        parts.append(f'<text x="{width - pad}" y="{y - 4:.1f}" text-anchor="end" font-size="11" fill="#b00020">tolerance</text>')
    parts.append(f'<text x="{pad}" y="{pad - 16}" font-size="12">{html.escape(unit)} per layer, topological order</text>')
    parts.append("</svg>")
    return "".join(parts)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


def render_html(report: ConformanceReport) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>mpcompile conformance: {html.escape(report.model)}</title>"]
    out.append(f"<style>{_STYLE}</style></head><body>")
    verdict = '<span class="pass">PASS</span>' if report.passed else '<span class="fail">FAIL</span>'
    out.append(f"<h1>Conformance {verdict}</h1><p>model <code>{html.escape(report.model)}</code>, {report.samples} samples.</p>")
    if report.fp32_accuracy is not None:
        out.append(f"<p>FP32 accuracy {report.fp32_accuracy:.2%}; fake-quant plan {report.reference_accuracy:.2%}.</p>")
    out.append("<h2>Plan vs FP32 (the accuracy cost)</h2><table><tr><th>output</th><th>cosine</th><th>SQNR dB</th><th>top-1 agreement</th><th>max |diff|</th></tr>")
    for name, acc in report.reference_vs_fp32.items():
        out.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(acc.cosine, 6)}</td><td>{_fmt(acc.sqnr_db)}</td><td>{_pct(acc.top1)}</td><td>{_fmt(acc.max_abs_diff)}</td></tr>")
    out.append("</table>")
    out.append("<h2>Backends vs reference</h2><table><tr><th>backend</th><th>output</th><th>status</th><th>max LSB</th><th>tolerance</th>"
               "<th>share beyond</th><th>cosine</th><th>SQNR dB</th><th>top-1 agreement</th><th>accuracy</th></tr>")
    for b in report.backends:
        if b.error:
            out.append(f"<tr><td>{html.escape(b.backend)}</td><td colspan='9' class='fail'>{html.escape(b.error)}</td></tr>")
        for name, acc in b.outputs.items():
            status = '<span class="pass">pass</span>' if acc.passed() else '<span class="fail">fail</span>'
            out.append(
                f"<tr><td>{html.escape(b.backend)}</td><td>{html.escape(name)}</td><td>{status}</td><td>{_fmt(acc.max_lsb)}</td>"
                f"<td>{_fmt(acc.tolerance_lsb)}</td><td>{_pct(acc.beyond_share)}</td><td>{_fmt(acc.cosine, 6)}</td>"
                f"<td>{_fmt(acc.sqnr_db)}</td><td>{_pct(acc.top1)}</td><td>{_pct(b.accuracy)}</td></tr>"
            )
    out.append("</table>")
    for b in report.backends:
        if b.deviations:
            out.append(f"<h3>{html.escape(b.backend)}: deviations from the plan</h3><table><tr><th>subject</th><th>change</th><th>reason</th></tr>")
            for d in b.deviations:
                out.append(f"<tr><td>{html.escape(d['kind'])} {html.escape(d['subject'])}</td><td>{html.escape(d['change'])}</td><td>{html.escape(d['reason'])}</td></tr>")
            out.append("</table>")
        if b.per_layer:
            first = b.first_divergence
            note = f"first diverging tensor: <b>{html.escape(first)}</b>" if first else "no layer beyond tolerance"
            out.append(f"<h3>{html.escape(b.backend)}: per-layer error</h3><p class='small'>{note}</p>")
            tol = next(iter(b.per_layer.values())).tolerance_lsb
            out.append(_plot(b.backend, [(k, v.max_lsb or 0.0) for k, v in b.per_layer.items()], tol))
            out.append("<details><summary>table</summary><table><tr><th>tensor</th><th>max LSB</th><th>cosine</th></tr>")
            for k, v in b.per_layer.items():
                out.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.max_lsb)}</td><td>{_fmt(v.cosine, 6)}</td></tr>")
            out.append("</table></details>")
    out.append("<p class='small'>Tolerances are in LSB (quantization steps) of each tensor's scale; lookup-table outputs (softmax, sigmoid, tanh) get a wider default.</p>")
    out.append("</body></html>")
    return "\n".join(out)
