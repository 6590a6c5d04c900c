"""The prompt map (prompt_map.png): the prompts' 2-D embedding map, coloured by detected task."""

from __future__ import annotations

from .plot_style import MARKERS, colour_map, figure, legend_right


def fig_prompt_map(result: dict, points: list[dict]):
    """Scatter of the prompts' 2-D embedding map: colour = detected task, marker = dataset (None without points)."""
    if not points:
        return None
    runs_dataset = {r.get("prompt_id"): str(r.get("dataset")) for r in result["runs"]}
    dataset_of = {p["prompt_id"]: str(p.get("dataset") or runs_dataset.get(p["prompt_id"], "?")) for p in points}
    tasks = sorted({p["task"] for p in points}, key=lambda t: (str(type(t)), t))
    datasets = sorted({dataset_of.get(p["prompt_id"], "?") for p in points})
    colours = colour_map([str(t) for t in tasks])
    markers = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(datasets)}
    fig = figure(7.6, 5.4)
    ax = fig.add_subplot()
    for task in tasks:
        for d in datasets:
            mine = [p for p in points if p["task"] == task and dataset_of.get(p["prompt_id"], "?") == d]
            if mine:
                ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], s=30, marker=markers[d],
                           color=colours[str(task)], edgecolor="black", linewidth=0.4, alpha=0.85)
    from matplotlib.lines import Line2D

    name = (lambda t: f"task {t}") if all(isinstance(t, int) for t in tasks) else str
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=colours[str(t)], markeredgecolor="black",
                      markeredgewidth=0.4) for t in tasks]
    labels = [name(t) for t in tasks]
    if len(datasets) > 1 or datasets != ["?"]:
        handles += [Line2D([], [], ls="")] + [
            Line2D([], [], ls="", marker=markers[d], ms=6, color="0.75", markeredgecolor="black",
                   markeredgewidth=0.4) for d in datasets]
        labels += [""] + datasets
    legend_right(ax, "task (colour) · dataset (marker)", handles, labels)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"Prompts by detected task ({len(points)} prompts, sentence embeddings, PCA)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    return fig
