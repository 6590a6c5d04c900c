"""Plots of a bench (or demo) result, and the 2-D map of its prompts by detected task (`taskspec report`).

Every figure is drawn on a matplotlib `Figure` with the Agg canvas (no screen, no pyplot state) and written
atomically: saved to a temporary name in the output folder, then renamed. A plot the result has no data for is
skipped with the reason, which the report states (docs: README "Using it", `taskspec report`).

    tau.png          τ per dataset and method (grouped bars; "all prompts" = every prompt pooled)
    depth.png        draft accuracy per depth (accepted / reached), one line per method, over every prompt
    routing.png      routing split (which specialist drafted) per dataset and composed method (stacked bars)
    speedup.png      speedup against τ, one point per (dataset, method)
    prompt_map.png   prompt embeddings projected to 2-D (PCA), coloured by detected task
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io_utils import write_bytes_atomic
from .result_file import ALL

BASELINE = "none"
ALL_LABEL = "all prompts"
PLOT_FILES = ("tau.png", "depth.png", "routing.png", "speedup.png", "prompt_map.png")


# ---- plotting helpers --------------------------------------------------------------------------------------------
@dataclass
class Plot:
    """One plot of the report: written to `name` in the output folder, or skipped (`skipped` says why)."""

    name: str  # file name, e.g. "tau.png"
    title: str
    caption: str = ""
    skipped: str | None = None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure_atomic(fig, path: str | os.PathLike) -> Path:
    """PNG written to a temporary name in the same folder, then renamed (never half-written)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    return write_bytes_atomic(path, buffer.getvalue())


def methods_of(result: dict) -> list[str]:
    """Every method of the summary, in the order of meta["methods"], then in order of appearance."""
    seen = [m for m in result["meta"].get("methods", []) if any(m in t for t in result["summary"].values())]
    for table in result["summary"].values():
        seen += [m for m in table if m not in seen]
    return seen


def datasets_of(result: dict) -> list[str]:
    """Datasets to show side by side: every dataset, then "all" (pooled) when there are several."""
    names = [d for d in result["summary"] if d != ALL]
    return names + [ALL] if len(names) != 1 and ALL in result["summary"] else names


def _label(dataset: str) -> str:
    return ALL_LABEL if dataset == ALL else dataset


def _wrap(name: str, width: int = 26) -> str:
    """A long method name (drafter path and options) over several lines, broken after , / : @ +"""
    out = []
    for text in name.split("\n"):
        lines = [""]
        for piece in filter(None, re.split(r"(?<=[,/:@+])", text)):
            if lines[-1] and len(lines[-1]) + len(piece) > width:
                lines.append("")
            lines[-1] += piece
        out += lines
    return "\n".join(out)


def _colours(names: list[str], palette: str = "tab10") -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps[palette if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _legend_right(ax, title: str | None = None, handles=None, labels=None):
    """The legend beside the axes (upper right, outside), long names wrapped."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, [_wrap(label) for label in labels], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     frameon=False, fontsize=8, title=title, title_fontsize=8, alignment="left")


def _tick_labels(ax, labels: list[str]) -> None:
    """Horizontal tick labels (long names wrapped), rotated only when a name cannot be wrapped narrow enough."""
    labels = [_wrap(label, 14) for label in labels]
    widths = [max(len(line) for line in label.split("\n")) for label in labels]
    long = max(widths) > 16 or sum(widths) > 110
    ax.set_xticks(range(len(labels)), labels, rotation=25 if long else 0, ha="right" if long else "center",
                  fontsize=8.5, rotation_mode="anchor")


# ---- the plots ---------------------------------------------------------------------------------------------------
def fig_tau(result: dict):
    """Grouped bars: τ per dataset (groups) and method (bars); dotted line at τ = 1 (plain decoding). With one
    dataset (a demo), one bar per method."""
    summary, methods, groups = result["summary"], methods_of(result), datasets_of(result)
    colours = _colours(methods)
    if len(groups) == 1:
        (dataset,) = groups
        shown = [m for m in methods if m in summary[dataset]]
        fig = _figure(min(12.0, max(5.5, 2.5 + 0.75 * len(shown))), 4.4)
        ax = fig.add_subplot()
        ys = [summary[dataset][m]["acceptance_length"] for m in shown]
        bars = ax.bar(range(len(shown)), ys, 0.7, color=[colours[m] for m in shown])
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        ax.axhline(1.0, color="0.35", lw=0.8, ls=":", zorder=0)
        _tick_labels(ax, shown)
        ax.set_ylim(0, max([1.0, *ys]) * 1.12)
        ax.set_title(f"Acceptance length τ per method ({_label(dataset)}; dotted: plain decoding, τ = 1)",
                     fontsize=10)
    else:
        n = len(methods)
        fig = _figure(min(13.0, max(6.5, 1.5 + len(groups) * (0.3 * n + 0.45))), 4.6)
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
        _tick_labels(ax, [_label(d) for d in groups])
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylim(0, top * (1.22 if n > 3 else 1.12))
        ax.set_title("Acceptance length τ per dataset and method", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()  # the methods first, the τ = 1 line last
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("plain decoding"))
        _legend_right(ax, "method", [handles[i] for i in order], [labels[i] for i in order])
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
    colours = _colours(methods_of(result))
    depth_max = max(len(table[m]["reached_per_depth"]) for m in methods)
    fig = _figure(min(12.0, max(6.5, 4.5 + 0.35 * depth_max)), 4.0)
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
    _legend_right(ax, "method")
    return fig


def routed_methods(result: dict) -> list[str]:
    return [m for m in methods_of(result)
            if any(table.get(m, {}).get("routing") for table in result["summary"].values())]


def fig_routing(result: dict):
    """Stacked bars: share of requests (or steps) each specialist drafted, per dataset and composed method."""
    routed = routed_methods(result)
    if not routed:
        return None
    summary, groups = result["summary"], datasets_of(result)
    labels = sorted({label for t in summary.values() for m in routed for label in t.get(m, {}).get("routing", {})})
    colours = _colours(labels, "Set2" if len(labels) <= 8 else "tab20")
    bars = [(d, m) for d in groups for m in routed if summary[d].get(m, {}).get("routing")]
    gap = 0.6 if len(routed) > 1 else 0.0  # space between dataset groups
    xs, x, previous = [], 0.0, None
    for d, _ in bars:
        x += (gap if previous not in (None, d) else 0) + (1 if previous is not None else 0)
        xs.append(x)
        previous = d
    fig = _figure(min(15.0, max(6.0, 2.2 + 0.55 * len(bars))), 4.4 if len(routed) == 1 else 5.2)
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
        ax.set_xticks(xs, [_wrap(m) for _, m in bars], rotation=90, fontsize=8)
        for d in dict.fromkeys(d for d, _ in bars):
            members = [xi for xi, (dd, _) in zip(xs, bars) if dd == d]
            ax.text(sum(members) / len(members), 1.07, _label(d), ha="center", va="bottom", fontsize=8.5,
                    fontweight="bold")
        ax.set_ylim(0, 1.15)
    else:
        _tick_labels(ax, [_label(d) for d, _ in bars])
        ax.set_ylim(0, 1.08)
    ax.set_xlim(xs[0] - 0.6, xs[-1] + 0.6)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_ylabel("share of routing decisions")
    title = "Routing split: which specialist drafted"
    ax.set_title(title + (f" ({routed[0]})" if len(routed) == 1 else ""), fontsize=10,
                 pad=16 if len(routed) > 1 else 6)
    handles, names = ax.get_legend_handles_labels()
    _legend_right(ax, "specialist", handles[::-1], names[::-1])  # top to bottom, as stacked
    return fig


_MARKERS = "osD^vPXhp<>"


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
    colours = _colours(methods)
    markers = {d: ("*" if d == ALL else _MARKERS[i % len(_MARKERS)]) for i, d in enumerate(groups)}
    fig = _figure(8.4, 5.4)
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
        names += [_label(d) for d in groups]
    handles += [Line2D([], [], ls=""), Line2D([], [], ls="--", color="0.45"), Line2D([], [], ls=":", color="0.45")]
    names += ["", "speedup 1 (plain decoding)", "speedup = τ (drafting free,\nverifying as cheap as one step)"]
    _legend_right(ax, "method (colour) · dataset (marker)" if len(groups) > 1 else "method", handles, names)
    # after the layout: the pooled points named by method (always), the others by dataset where a label fits
    order = sorted(range(len(points)), key=lambda i: points[i][0] != pooled)
    _place_labels(fig, ax, [(points[i][2], points[i][3]) for i in order],
                  [_wrap(points[i][1]) if points[i][0] == pooled else _label(points[i][0]) for i in order],
                  optional=[points[i][0] != pooled for i in order],
                  bold=[points[i][0] == pooled for i in order])
    return fig


def _place_labels(fig, ax, points: list[tuple[float, float]], texts: list[str], optional: list[bool],
                  bold: list[bool], fontsize: float = 7) -> None:
    """Label points in order with the first of a few offsets whose text overlaps no other label, no point and stays
    inside the axes. A required label that fits nowhere takes the least crowded place, with a thin leader line when
    it sits away from its point; an optional one is only placed right beside its point, or left out."""
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    to_display = ax.transData.transform
    axes_box = ax.get_window_extent(renderer)
    r = 5 * fig.dpi / 72  # a marker's radius in pixels
    dots = [to_display(p) for p in points]
    dot_boxes = [(x - r, y - r, x + r, y + r) for x, y in dots]
    placed: list[tuple[float, float, float, float]] = []
    offsets = [(6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"),
               (-6, -4, "right", "top"), (0, 8, "center", "bottom"), (0, -8, "center", "top"),
               (16, 14, "left", "bottom"), (-16, 14, "right", "bottom"), (16, -14, "left", "top"),
               (-16, -14, "right", "top"), (0, 22, "center", "bottom"), (0, -22, "center", "top"),
               (28, 0, "left", "center"), (-28, 0, "right", "center")]

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    def annotate(point, text, offset, heavy, leader=False):
        dx, dy, ha, va = offset
        arrow = dict(arrowstyle="-", color="0.5", lw=0.5, shrinkA=0, shrinkB=4) if leader else None
        return ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                           fontsize=fontsize + (0.5 if heavy else 0), color="0.1" if heavy else "0.3",
                           fontweight="bold" if heavy else "normal", zorder=5, arrowprops=arrow)

    for index, (point, text) in enumerate(zip(points, texts)):
        best = None
        for offset in offsets[:6] if optional[index] else offsets:  # optional labels only right beside their point
            ann = annotate(point, text, offset, bold[index])
            e = ann.get_window_extent(renderer)
            box = (e.x0 - 1, e.y0 - 1, e.x1 + 1, e.y1 + 1)
            outside = (max(0, axes_box.x0 - box[0]) + max(0, box[2] - axes_box.x1)
                       + max(0, axes_box.y0 - box[1]) + max(0, box[3] - axes_box.y1)) * 50
            cost = outside + sum(overlap(box, b) for b in placed) + sum(
                overlap(box, b) for i, b in enumerate(dot_boxes) if i != index)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box, offset)
            else:
                ann.remove()
            if cost == 0:
                break
        cost, ann, box, offset = best
        if cost > 0 and optional[index]:
            ann.remove()
            continue
        if offset not in offsets[:6]:  # away from its point: a leader line shows which point it names
            ann.remove()
            annotate(point, text, offset, bold[index], leader=True)
        placed.append(box)


def fig_prompt_map(result: dict, points: list[dict]):
    """Scatter of the prompts' 2-D embedding map: colour = detected task, marker = dataset (None without points)."""
    if not points:
        return None
    runs_dataset = {r.get("prompt_id"): str(r.get("dataset")) for r in result["runs"]}
    dataset_of = {p["prompt_id"]: str(p.get("dataset") or runs_dataset.get(p["prompt_id"], "?")) for p in points}
    tasks = sorted({p["task"] for p in points}, key=lambda t: (str(type(t)), t))
    datasets = sorted({dataset_of.get(p["prompt_id"], "?") for p in points})
    colours = _colours([str(t) for t in tasks])
    markers = {d: _MARKERS[i % len(_MARKERS)] for i, d in enumerate(datasets)}
    fig = _figure(7.6, 5.4)
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
    _legend_right(ax, "task (colour) · dataset (marker)", handles, labels)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"Prompts by detected task ({len(points)} prompts, sentence embeddings, PCA)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    return fig


# ---- all plots of a result ---------------------------------------------------------------------------------------
def write_plots(result: dict, out_dir: str | os.PathLike, points: list[dict] | None = None) -> list[Plot]:
    """Every plot of the report into out_dir (a plot that is skipped has its stale file from an earlier report
    removed). `points`: the prompt map, else result["prompt_map"] when present."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = points if points is not None else result.get("prompt_map")
    summary = result["summary"]
    groups = datasets_of(result)
    no_depth = [m for m in methods_of(result)
                if not any((summary.get(ALL) or {}).get(m, {}).get("reached_per_depth") or [])]
    routed = routed_methods(result)
    prompts_total = len({r.get("prompt_id") for r in result["runs"]})
    plots = [
        (Plot("tau.png", "τ per dataset and method",
              "Acceptance length τ (tokens per target step, bonus included) per dataset and method"
              + (f"; '{ALL_LABEL}' pools every prompt." if ALL in groups else ".")),
         lambda: fig_tau(result), None),
        (Plot("depth.png", "Acceptance by draft depth",
              "Draft accuracy at depth d (accepted / reached) over every prompt"
              + (f"; no per-depth data for {', '.join(no_depth)}." if no_depth else ".")),
         lambda: fig_depth(result), "no method drafts (no accepted/reached counts per depth)"),
        (Plot("routing.png", "Routing split",
              f"Share of routing decisions (requests, or steps for per-step routing) each specialist got, for "
              f"{', '.join(routed)}."),
         lambda: fig_routing(result),
         "no method has a routing split (only composed drafter-set strategies such as confidence, entropy and "
         "routed record one)"),
        (Plot("speedup.png", "Speedup against τ",
              f"Speedup over '{BASELINE}' (tokens/s) against τ, one point per dataset and method"
              + (" (stars: every prompt pooled)" if ALL in groups else "")
              + "; dotted: speedup = τ, dashed: speedup 1."),
         lambda: fig_speedup(result),
         f"no speedups (the result has no '{BASELINE}' method to divide by)"),
        (Plot("prompt_map.png", "Prompts by detected task",
              f"Sentence embeddings of {len(points or [])} of the {prompts_total} prompts projected to 2-D (PCA), "
              "coloured by the task the task map detects, one marker per dataset."),
         lambda: fig_prompt_map(result, points),
         "no prompt map (the result has no 'prompt_map'; pass --taskmap TASKMAP [--data-dir DIR] to compute one)"),
    ]
    out = []
    for plot, draw, reason in plots:
        fig = draw()
        if fig is None:
            plot.skipped, plot.caption = reason, ""
            (out_dir / plot.name).unlink(missing_ok=True)
        else:
            save_figure_atomic(fig, out_dir / plot.name)
        out.append(plot)
    return out
