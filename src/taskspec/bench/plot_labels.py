"""Point labels placed where they overlap no other label or point (the speedup plot's method and dataset names)."""

from __future__ import annotations

def place_labels(fig, ax, points: list[tuple[float, float]], texts: list[str], optional: list[bool],
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
