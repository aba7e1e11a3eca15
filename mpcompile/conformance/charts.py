"""Charts of the report as inline SVG, drawn with matplotlib (the ``report`` extra).

Without matplotlib the report still renders every table and says how to get the charts.
Every chart is in the order its caption states and draws tolerances at their real value.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: One colour per precision, the same in every chart and in the tables.
PRECISION_COLOURS = {"int8": "#2b6cb0", "int16": "#38a169", "fp16": "#d69e2e", "bf16": "#dd6b20", "fp32": "#a0aec0"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float, layout: str | None = "constrained"):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg", force=False)
    # Text stays text in the SVG (searchable, small, fast) instead of one path per glyph.
    matplotlib.rcParams["svg.fonttype"] = "none"
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def _svg(fig) -> str:  # noqa: ANN001
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prologue or doctype inside HTML


def layer_bars(title: str, values: Sequence[tuple[str, float]], tolerance: float | None, unit: str,
               order: str = "topological order") -> str:
    """One bar per layer; bars beyond ``tolerance`` in red and the tolerance as a dashed line at its value."""
    if not values or not available():
        return ""
    # Margins by hand: a layout engine measures every rotated label and doubles the time.
    fig = _figure(max(6.0, min(18.0, 0.18 * len(values) + 4)), 3.6, layout=None)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.9, bottom=0.4 if len(values) <= 60 else 0.1)
    ax = fig.add_subplot()
    heights = [v for _, v in values]
    colours = ["#c53030" if tolerance is not None and v > tolerance else "#2b6cb0" for v in heights]
    ax.bar(range(len(values)), heights, color=colours)
    if tolerance is not None:
        ax.axhline(tolerance, color="#c53030", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g} {unit}")
        ax.legend(loc="upper right", fontsize=8)
    if len(values) <= 60:
        ax.set_xticks(range(len(values)), [k if len(k) <= 28 else "…" + k[-27:] for k, _ in values],
                      rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xticks([])
    ax.set_ylabel(unit)
    ax.set_title(f"{title} ({order})", fontsize=10)
    return _svg(fig)


def lsb_histogram(title: str, counts: Sequence[int]) -> str:
    """Share of values per |diff| in whole LSB: 0, 1, …, and the last bin for that many or more.

    Nothing when every value is equal (the table says "exact 100 %"): a single bar shows nothing more.
    """
    total = sum(counts)
    if not total or counts[0] == total or not available():
        return ""
    fig = _figure(4.2, 2.4)
    ax = fig.add_subplot()
    labels = [str(i) for i in range(len(counts) - 1)] + [f"≥{len(counts) - 1}"]
    ax.bar(labels, [c / total for c in counts], color="#2b6cb0")
    ax.set_yscale("log")
    ax.set_xlabel("|backend − plan| in LSB")
    ax.set_ylabel("share of values")
    ax.set_title(title, fontsize=10)
    return _svg(fig)


def precision_map(rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """One strip per row (the plan, then each backend): every node, in topological order, coloured by precision."""
    if not rows or not rows[0][1] or not available():
        return ""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(PRECISION_COLOURS)
    grid = [[names.index(p) if p in names else names.index("fp32") for p in precisions] for _, precisions in rows]
    fig = _figure(10.0, 0.45 * len(rows) + 1.0)
    ax = fig.add_subplot()
    ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=ListedColormap(list(PRECISION_COLOURS.values())),
              vmin=0, vmax=len(names) - 1)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.set_xlabel("nodes in topological order")
    used = {p for _, precisions in rows for p in precisions}
    ax.legend(handles=[Patch(color=c, label=p.upper()) for p, c in PRECISION_COLOURS.items() if p in used],
              loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=5, fontsize=8, frameon=False)
    return _svg(fig)


def pareto(rows: Sequence[Mapping[str, Any]], budget: float, chosen: Mapping[str, Any] | None) -> str:
    """The auto search's measured plans: accuracy drop against the share of MACs left in INT8, the budget dashed."""
    points = [(r["int8_mac_share"], r["drop"]) for r in rows
              if isinstance(r.get("drop"), (int, float)) and math.isfinite(r["drop"])]
    if not points or not available():
        return ""
    fig = _figure(5.2, 3.2)
    ax = fig.add_subplot()
    ax.plot([100 * x for x, _ in points], [y for _, y in points], marker="o", color="#2b6cb0", linewidth=1)
    if chosen is not None and math.isfinite(chosen.get("drop", math.nan)):
        ax.plot([100 * chosen["int8_mac_share"]], [chosen["drop"]], marker="*", markersize=14, color="#c53030",
                linestyle="none", label="chosen")
    ax.axhline(budget, color="#c53030", linestyle="--", linewidth=1, label=f"budget {budget:g}")
    ax.set_xlabel("MACs in INT8 (%)")
    ax.set_ylabel("drop against FP32")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("auto search: the plans it measured", fontsize=10)
    return _svg(fig)


def latency(rows: Sequence[Mapping[str, Any]], batches: Sequence[int]) -> str:
    """p50 latency per artifact and batch (the FP32 baselines included), one group of bars per batch."""
    timed = [r for r in rows if not r.get("error") and r.get("batches")]
    if not timed or not available():
        return ""
    fig = _figure(max(5.0, 1.2 * len(batches) * len(timed) ** 0.5 + 3), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(timed)
    for i, row in enumerate(timed):
        label = f"{row['label']} ({row['backend']}{', FP32' if row.get('baseline') else ''})"
        values = [row["batches"].get(str(b), {}).get("p50_ms", math.nan) for b in batches]
        ax.bar([j + i * width for j in range(len(batches))], values, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("latency (interleaved rounds, same run)", fontsize=10)
    return _svg(fig)
