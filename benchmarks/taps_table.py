"""The TAPS table from `taskspec bench --drafter-set ... --compose ...` results: one row per method, τ per benchmark
and on average, the speedup over `none` per benchmark averaged over benchmarks; then the routing split of the
routed strategies. Several result files (benchmarks split between processes) are read as one table: each
benchmark's figures come from the one run that measured it, so every ratio is still measured inside one process.

    python benchmarks/taps_table.py runs/bench/taps-t0-a.json runs/bench/taps-t0-b.json [--labels single=generic]
"""

from __future__ import annotations

import argparse
import json

COLUMNS = ("mt-bench", "gsm8k", "math500", "svamp")


def merged_summary(results: list[dict]) -> dict:
    """dataset → method → figures, from every result's per-benchmark tables (their "all" rows are dropped)."""
    summary: dict = {}
    for result in results:
        for dataset, table in result["summary"].items():
            if dataset != "all":
                if dataset in summary:
                    raise SystemExit(f"benchmark {dataset!r} is in two result files; expected each in one")
                summary[dataset] = table
    return summary


def taps_table(results: list[dict], labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    summary = merged_summary(results)
    datasets = [d for d in COLUMNS if d in summary] + sorted(d for d in summary if d not in COLUMNS)
    methods = [m for m in summary[datasets[0]] if m != "none"]
    lines = ["| method | " + " | ".join(datasets) + " | average τ | speedup (mean over benchmarks) | greedy match |",
             "|---|" + "---:|" * (len(datasets) + 3)]
    for method in methods:
        rows = [summary[d][method] for d in datasets]
        taus = [row["acceptance_length"] for row in rows]
        speedups = [row["speedup"] for row in rows if row.get("speedup")]
        matches = [(row.get("greedy_match_rate"), row["prompts"]) for row in rows]
        match = (sum(m * n for m, n in matches) / sum(n for _, n in matches)
                 if all(m is not None for m, _ in matches) else None)
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(f"{t:.2f}" for t in taus)
                     + f" | {sum(taus) / len(taus):.2f} | "
                     + (f"{sum(speedups) / len(speedups):.2f}×" if speedups else "–") + " | "
                     + (f"{match:.0%}" if match is not None else "–") + " |")
    routed = [m for m in methods if any(summary[d][m].get("routing") for d in datasets)]
    if routed:
        lines += ["", "| routing split | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
        for method in routed:
            cells = []
            for d in datasets:
                split = summary[d][method].get("routing", {})
                total = sum(split.values()) or 1
                cells.append(", ".join(f"{k} {v / total:.0%}" for k, v in split.items()))
            lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="bench result JSON files")
    parser.add_argument("--labels", default="", help="method=label pairs, comma-separated")
    args = parser.parse_args()
    labels = dict(pair.split("=", 1) for pair in args.labels.split(",") if "=" in pair)
    print(taps_table([json.loads(open(path).read()) for path in args.results], labels))


if __name__ == "__main__":
    main()
