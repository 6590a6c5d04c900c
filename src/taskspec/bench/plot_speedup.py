"""The speedup plot (speedup.png): speedup against τ, one point per (dataset, method)."""

from __future__ import annotations

import numpy as np

from .plot_data import BASELINE, dataset_label, datasets_of, methods_of
from .plot_labels import place_labels
from .plot_style import MARKERS, colour_map, figure, legend_right, wrap
from .result_file import ALL


def fig_speedup(result: dict):
    """Scatter: speedup against τ, one point per (dataset, method), colour = method, marker = dataset; the pooled
    points ('all prompts', stars) carry the method's name, the others their dataset's where it fits; speedup = 1 and
    speedup = τ drawn for reference. `none` is (1, 1) on every dataset: drawn once."""
    summary, methods, groups = result["summary"], methods_of(result), datasets_of(result)
    pooled = groups[-1]  # 'all' with several datasets, else the only one
    points = [(d, m, summary[d][m]["acceptance_length"], summary[d][m]["speedup"])
              for d in groups for m in methods if summary[d].get(m, {}).get("speedup") is not None
              and (m != BASELINE or d == pooled)]
    if not points:
        return None
    colours = colour_map(methods)
    markers = {d: ("*" if d == ALL else MARKERS[i % len(MARKERS)]) for i, d in enumerate(groups)}
    fig = figure(8.4, 5.4)
    ax = fig.add_subplot()
    for d, m, tau, speedup in points:
        ax.scatter([tau], [speedup], s=130 if d == ALL else 42, marker=markers[d], color=colours[m],
                   edgecolor="black", linewidth=0.5, zorder=3 if d != ALL else 4)
    taus, speedups = [p[2] for p in points], [p[3] for p in points]
    x_lo, x_hi = min(0.9, min(taus) - 0.1), max(taus) * 1.08 + 0.1
    y_lo, y_hi = max(0.0, min(min(speedups), 1.0) - 0.2), max(max(speedups), 1.0) * 1.1 + 0.05
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    line = np.array([0.0, max(x_hi, y_hi)])
    ax.plot(line, line, ls=":", color="0.45", lw=0.9, zorder=1)
    ax.axhline(1.0, color="0.45", lw=0.9, ls="--", zorder=1)
    ax.set_xlabel("τ (tokens per target step)")
    ax.set_ylabel(f"speedup over {BASELINE!r} (tokens/s ratio)")
    ax.set_title("Speedup against acceptance length", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    from matplotlib.lines import Line2D

    shown = [m for m in methods if any(p[1] == m for p in points)]
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=colours[m], markeredgecolor="black",
                      markeredgewidth=0.5) for m in shown]
    names = list(shown)
    if len(groups) > 1:
        handles.append(Line2D([], [], ls=""))
        names.append("")
        handles += [Line2D([], [], ls="", marker=markers[d], ms=10 if d == ALL else 6, color="0.75",
                           markeredgecolor="black", markeredgewidth=0.5) for d in groups]
        names += [dataset_label(d) for d in groups]
    handles += [Line2D([], [], ls=""), Line2D([], [], ls="--", color="0.45"), Line2D([], [], ls=":", color="0.45")]
    names += ["", "speedup 1 (plain decoding)", "speedup = τ (drafting free,\nverifying as cheap as one step)"]
    legend_right(ax, "method (colour) · dataset (marker)" if len(groups) > 1 else "method", handles, names)
    # after the layout: the pooled points named by method (always), the others by dataset where a label fits
    order = sorted(range(len(points)), key=lambda i: points[i][0] != pooled)
    place_labels(fig, ax, [(points[i][2], points[i][3]) for i in order],
                 [wrap(points[i][1]) if points[i][0] == pooled else dataset_label(points[i][0]) for i in order],
                 optional=[points[i][0] != pooled for i in order],
                 bold=[points[i][0] == pooled for i in order])
    return fig
