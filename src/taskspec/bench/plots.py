"""Plots of a bench (or demo) result, and the 2-D map of its prompts by detected task (`taskspec report`).

Every figure is drawn on a matplotlib `Figure` with the Agg canvas (no screen, no pyplot state) and written
atomically: saved to a temporary name in the output folder, then renamed. A plot the result has no data for is
skipped with the reason, which the report states (docs: README "Using it", `taskspec report`). This module lists
the plots and writes them; plot_acceptance.py (τ, depth), plot_routing.py, plot_speedup.py and plot_prompt_map.py
draw them, in the shared look of plot_style.py.

    tau.png          τ per dataset and method (grouped bars; "all prompts" = every prompt pooled)
    depth.png        draft accuracy per depth (accepted / reached), one line per method, over every prompt
    routing.png      routing split (which specialist drafted) per dataset and composed method (stacked bars)
    speedup.png      speedup against τ, one point per (dataset, method)
    prompt_map.png   prompt embeddings projected to 2-D (PCA), coloured by detected task
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .plot_acceptance import fig_depth, fig_tau
from .plot_data import ALL_LABEL, BASELINE, datasets_of, methods_of, routed_methods
from .plot_prompt_map import fig_prompt_map
from .plot_routing import fig_routing
from .plot_speedup import fig_speedup
from .plot_style import save_figure_atomic
from .result_file import ALL

PLOT_FILES = ("tau.png", "depth.png", "routing.png", "speedup.png", "prompt_map.png")


@dataclass
class Plot:
    """One plot of the report: written to `name` in the output folder, or skipped (`skipped` says why)."""

    name: str  # file name, e.g. "tau.png"
    title: str
    caption: str = ""
    skipped: str | None = None


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
