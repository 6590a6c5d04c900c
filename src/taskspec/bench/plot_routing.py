"""The routing plot (routing.png): which specialist drafted, per dataset and composed method."""

from __future__ import annotations

from .plot_data import dataset_label, datasets_of, routed_methods
from .plot_style import colour_map, figure, legend_right, tick_labels, wrap


def fig_routing(result: dict):
    """Stacked bars: share of requests (or steps) each specialist drafted, per dataset and composed method."""
    routed = routed_methods(result)
    if not routed:
        return None
    summary, groups = result["summary"], datasets_of(result)
    labels = sorted({label for t in summary.values() for m in routed for label in t.get(m, {}).get("routing", {})})
    colours = colour_map(labels, "Set2" if len(labels) <= 8 else "tab20")
    bars = [(d, m) for d in groups for m in routed if summary[d].get(m, {}).get("routing")]
    gap = 0.6 if len(routed) > 1 else 0.0  # space between dataset groups
    xs, x, previous = [], 0.0, None
    for d, _ in bars:
        x += (gap if previous not in (None, d) else 0) + (1 if previous is not None else 0)
        xs.append(x)
        previous = d
    fig = figure(min(15.0, max(6.0, 2.2 + 0.55 * len(bars))), 4.4 if len(routed) == 1 else 5.2)
    ax = fig.add_subplot()
    for label in labels:
        bottoms, heights = [], []
        for d, m in bars:
            split = summary[d][m]["routing"]
            total = sum(split.values()) or 1
            below = sum(v for k, v in split.items() if k < label) / total
            bottoms.append(below)
            heights.append(split.get(label, 0) / total)
        rects = ax.bar(xs, heights, 0.75, bottom=bottoms, color=colours[label], label=label, edgecolor="white",
                       linewidth=0.6)
        ax.bar_label(rects, labels=[f"{h:.0%}" if h >= 0.08 else "" for h in heights], label_type="center",
                     fontsize=7)
    for xi, (d, m) in zip(xs, bars):
        ax.text(xi, 1.01, f"n={sum(summary[d][m]['routing'].values())}", ha="center", va="bottom", fontsize=6.5,
                color="0.3")
    if len(routed) > 1:  # bars are labelled by method; the dataset heads each group
        ax.set_xticks(xs, [wrap(m) for _, m in bars], rotation=90, fontsize=8)
        for d in dict.fromkeys(d for d, _ in bars):
            members = [xi for xi, (dd, _) in zip(xs, bars) if dd == d]
            ax.text(sum(members) / len(members), 1.07, dataset_label(d), ha="center", va="bottom", fontsize=8.5,
                    fontweight="bold")
        ax.set_ylim(0, 1.15)
    else:
        tick_labels(ax, [dataset_label(d) for d, _ in bars])
        ax.set_ylim(0, 1.08)
    ax.set_xlim(xs[0] - 0.6, xs[-1] + 0.6)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_ylabel("share of routing decisions")
    title = "Routing split: which specialist drafted"
    ax.set_title(title + (f" ({routed[0]})" if len(routed) == 1 else ""), fontsize=10,
                 pad=16 if len(routed) > 1 else 6)
    handles, names = ax.get_legend_handles_labels()
    legend_right(ax, "specialist", handles[::-1], names[::-1])  # top to bottom, as stacked
    return fig
