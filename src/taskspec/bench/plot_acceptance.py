"""The acceptance plots: τ per dataset and method (tau.png) and draft accuracy per depth (depth.png)."""

from __future__ import annotations

import math

from .plot_data import dataset_label, datasets_of, methods_of
from .plot_style import colour_map, figure, legend_right, tick_labels
from .result_file import ALL


def fig_tau(result: dict):
    """Grouped bars: τ per dataset (groups) and method (bars); dotted line at τ = 1 (plain decoding). With one
    dataset (a demo), one bar per method."""
    summary, methods, groups = result["summary"], methods_of(result), datasets_of(result)
    colours = colour_map(methods)
    if len(groups) == 1:
        (dataset,) = groups
        shown = [m for m in methods if m in summary[dataset]]
        fig = figure(min(12.0, max(5.5, 2.5 + 0.75 * len(shown))), 4.4)
        ax = fig.add_subplot()
        ys = [summary[dataset][m]["acceptance_length"] for m in shown]
        bars = ax.bar(range(len(shown)), ys, 0.7, color=[colours[m] for m in shown])
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        ax.axhline(1.0, color="0.35", lw=0.8, ls=":", zorder=0)
        tick_labels(ax, shown)
        ax.set_ylim(0, max([1.0, *ys]) * 1.12)
        ax.set_title(f"Acceptance length τ per method ({dataset_label(dataset)}; dotted: plain decoding, τ = 1)",
                     fontsize=10)
    else:
        n = len(methods)
        fig = figure(min(13.0, max(6.5, 1.5 + len(groups) * (0.3 * n + 0.45))), 4.6)
        ax = fig.add_subplot()
        width = 0.8 / n
        top = 1.0
        for j, method in enumerate(methods):
            xs = [g + (j - (n - 1) / 2) * width for g, d in enumerate(groups) if method in summary[d]]
            ys = [summary[d][method]["acceptance_length"] for d in groups if method in summary[d]]
            bars = ax.bar(xs, ys, width * 0.92, color=colours[method], label=method)
            ax.bar_label(bars, fmt="%.2f", fontsize=6.5, padding=2, rotation=90 if n > 3 else 0)
            top = max([top, *ys])
        ax.axhline(1.0, color="0.35", lw=0.8, ls=":", zorder=0, label="plain decoding (τ = 1)")
        if groups[-1] == ALL:
            ax.axvline(len(groups) - 1.5, color="0.6", lw=0.8, ls="--")
        tick_labels(ax, [dataset_label(d) for d in groups])
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, top * (1.22 if n > 3 else 1.12))
        ax.set_title("Acceptance length τ per dataset and method", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()  # the methods first, the τ = 1 line last
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("plain decoding"))
        legend_right(ax, "method", [handles[i] for i in order], [labels[i] for i in order])
    ax.set_ylabel("τ (tokens per target step)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def fig_depth(result: dict):
    """Lines: draft accuracy per depth (accepted / reached) of every drafting method, over every prompt."""
    table = result["summary"].get(ALL) or next(iter(result["summary"].values()))
    methods = [m for m in methods_of(result) if m in table and any(table[m].get("reached_per_depth") or [])]
    if not methods:
        return None
    colours = colour_map(methods_of(result))
    depth_max = max(len(table[m]["reached_per_depth"]) for m in methods)
    fig = figure(min(12.0, max(6.5, 4.5 + 0.35 * depth_max)), 4.0)
    ax = fig.add_subplot()
    for method in methods:
        acc, reached = table[method].get("accepted_per_depth") or [], table[method]["reached_per_depth"]
        ys = [a / r if r else math.nan for a, r in zip(acc, reached)]
        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=4, lw=1.6, color=colours[method], label=method)
    ax.set_xticks(range(1, depth_max + 1))
    ax.set_xlim(0.6, depth_max + 0.4)
    ax.set_ylim(0, 1.04)
    ax.set_xlabel("draft depth d")
    ax.set_ylabel("draft accuracy (accepted / reached)")
    ax.set_title("Acceptance by draft depth (every prompt)", fontsize=10)
    ax.grid(alpha=0.3)
    legend_right(ax, "method")
    return fig
