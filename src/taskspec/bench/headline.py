"""The headline table of a bench or demo result: one row per dataset (or task), one column per method.

Plain decoding (`none`) shows its tokens/s, every other method its τ and speedup, the fastest in bold. The README's
headline table is this function's output for a committed result file, and a test keeps the two equal, so a figure
in the README can always be traced to the run that produced it.
"""

from __future__ import annotations

from .plot_data import datasets_of, methods_of
from .result_file import BASELINE


def headline_table(result: dict, datasets: list[str] | None = None) -> str:
    """Markdown table: `| task | none | method ... |`; a row per dataset (or task), then 'all' when there are several."""
    summary = result["summary"]
    names = datasets or datasets_of(result)
    methods = methods_of(result)
    header = "| task | " + " | ".join(f"`{m}`" for m in methods) + " |"
    rule = "|---|" + "---:|" * len(methods)
    rows = [header, rule]
    for name in names:
        table = summary[name]
        prompts = max(row.get("prompts", 0) for row in table.values())
        fastest = max((m for m in methods if m in table), key=lambda m: table[m]["tokens_per_second"])
        cells = [_cell(m, table.get(m), bold=(m == fastest)) for m in methods]
        rows.append(f"| {name} ({prompts} prompts) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(method: str, row: dict | None, bold: bool) -> str:
    if row is None:
        return "–"
    if method == BASELINE:
        text = f"{row['tokens_per_second']:.1f} tok/s"
    else:
        speedup = f"{row['speedup']:.2f}×" if row.get("speedup") else "–"
        text = f"τ {row['acceptance_length']:.2f}, {speedup}"
    return f"**{text}**" if bold else text
