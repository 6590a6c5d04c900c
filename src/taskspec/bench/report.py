"""Markdown tables from a bench result (the same figures as the JSON, for people), and `taskspec report`'s report.md."""

from __future__ import annotations


def markdown_tables(result: dict) -> str:
    """One table per dataset (and 'all'): method, τ, tokens/s, speedup, greedy match rate, time split per step."""
    out = []
    meta = result["meta"]
    kernels = f"linear {meta.get('linear_kernel', 'torch')}, attention {meta.get('attention_kernel', 'sdpa')}"
    out.append(f"target `{meta['target']}` ({meta['dtype']}; {kernels}), {meta['prompts']} prompts, "
               f"max_new_tokens {meta['max_new_tokens']}, temperature {meta['temperature']}")
    for dataset, table in result["summary"].items():
        out.append("")
        out.append(f"**{dataset}**")
        out.append("")
        out.append("| method | τ | tokens/s | speedup | greedy match | draft ms/step | target ms/step | other ms/step |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for method, row in table.items():
            per_step = row["time"]["per_step_ms"]
            match = row.get("greedy_match_rate")
            engine = not method.startswith("hf-")
            out.append("| {} | {:.2f} | {:.2f} | {} | {} | {} | {} | {} |".format(
                method, row["acceptance_length"], row["tokens_per_second"],
                f"{row['speedup']:.2f}×" if row.get("speedup") else "–",
                f"{match:.0%}" if match is not None else "–",
                f"{per_step['draft']:.1f}" if engine else "–",
                f"{per_step['target']:.1f}" if engine else "–",
                f"{per_step['accept_and_overhead']:.2f}" if engine else "–"))
    routing = [(method, row["routing"]) for method, row in result["summary"].get("all", {}).items()
               if row.get("routing")]
    if routing:
        out.append("")
        out.append("**routing split** (specialist chosen: requests, or verification steps for per-step routing)")
        out.append("")
        out.append("| method | dataset | split |")
        out.append("|---|---|---|")
        for dataset, table in result["summary"].items():
            for method, _ in routing:
                split = table.get(method, {}).get("routing", {})
                total = sum(split.values()) or 1
                out.append(f"| {method} | {dataset} | " + ", ".join(f"{k} {v / total:.0%}" for k, v in split.items())
                           + " |")
    if result.get("mismatches"):
        out.append("")
        out.append(f"{len(result['mismatches'])} greedy output(s) differ from `none`; first divergences "
                   "(gap = target's top-1 minus top-2 logit there):")
        for m in result["mismatches"][:20]:
            out.append(f"- {m['method']} on {m['prompt_id']} at token {m['position']}: "
                       f"{m.get('none_token')} vs {m.get('method_token')}, gap {m.get('top2_gap')}")
    return "\n".join(out)


def write_report(result: dict, out_dir, source: str | None = None, prompt_map: list[dict] | None = None):
    """`taskspec report`: out_dir/report.md (meta, the tables above, every plot with a caption) and the plots of
    bench/plots.py as PNGs, all written atomically. `prompt_map` (bench.result_file.prompt_map) overrides the result's
    own; a plot without data is skipped and report.md says why. Returns the path of report.md."""
    from pathlib import Path

    from ..io_utils import write_text_atomic
    from .headline import headline_table
    from .plots import write_plots
    from .result_file import check_prompt_map, check_result

    check_result(result, repr(source) if source else "result")
    if prompt_map is not None:
        check_prompt_map(prompt_map, "prompt map")
    out_dir = Path(out_dir)
    plots = write_plots(result, out_dir, prompt_map)
    meta = result["meta"]
    title = f"taskspec report: {Path(source).name}" if source else "taskspec report"
    out = [f"# {title}", "", "| | |", "|---|---|"]
    rows = [("source", _code(str(source)) if source else None), ("date", meta.get("date")),
            ("target", _code(str(meta["target"]))), ("dtype", meta.get("dtype")),
            ("temperature", meta.get("temperature")), ("max_new_tokens", meta.get("max_new_tokens")),
            ("prompts", meta.get("prompts")), ("datasets", ", ".join(meta.get("datasets") or []) or None),
            ("methods", ", ".join(_code(m) for m in meta.get("methods") or []) or None),
            ("command", _code(meta["command"]) if meta.get("command") else None)]
    out += [f"| {key} | {value} |" for key, value in rows if value is not None]
    out += ["", "## Summary", "", "τ and speedup against `none` per dataset (or task), the fastest in bold:", "",
            headline_table(result), "", "## Tables", "", markdown_tables(result), "", "## Plots"]
    for plot in plots:
        out += ["", f"### {plot.title}", ""]
        if plot.skipped:
            out.append(f"*Skipped: {plot.skipped}.*")
        else:
            out += [f"![{plot.title}]({plot.name})", "", f"*{plot.caption}*"]
    return write_text_atomic(out_dir / "report.md", "\n".join(out) + "\n")


def _code(text: str) -> str:
    """A Markdown code span for a table cell: survives backticks and pipes in the text."""
    text = text.replace("|", "\\|")  # a table cell ends at an unescaped pipe, even inside code
    return f"`` {text} ``" if "`" in text else f"`{text}`"
