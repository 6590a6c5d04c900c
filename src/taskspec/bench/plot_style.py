"""The look shared by every plot: an Agg figure (no screen, no pyplot state), atomic PNG saving, colours, markers,
wrapped long names, legends beside the axes and readable tick labels."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from ..io_utils import write_bytes_atomic

MARKERS = "osD^vPXhp<>"


def figure(width: float, height: float):
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


def wrap(name: str, width: int = 26) -> str:
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


def colour_map(names: list[str], palette: str = "tab10") -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps[palette if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def legend_right(ax, title: str | None = None, handles=None, labels=None):
    """The legend beside the axes (upper right, outside), long names wrapped."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, [wrap(label) for label in labels], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     frameon=False, fontsize=8, title=title, title_fontsize=8, alignment="left")


def tick_labels(ax, labels: list[str]) -> None:
    """Horizontal tick labels (long names wrapped), rotated only when a name cannot be wrapped narrow enough."""
    labels = [wrap(label, 14) for label in labels]
    widths = [max(len(line) for line in label.split("\n")) for label in labels]
    long = max(widths) > 16 or sum(widths) > 110
    ax.set_xticks(range(len(labels)), labels, rotation=25 if long else 0, ha="right" if long else "center",
                  fontsize=8.5, rotation_mode="anchor")
