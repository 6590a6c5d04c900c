"""The TAPS table from a `taskspec bench --drafter-set ... --compose ...` result: one row per method, τ per benchmark
and on average, and the speedup over `none` on all prompts; then the routing split of the routed strategies.

    python benchmarks/taps_table.py runs/bench/taps-t0.json [--labels single=generic,single:head:math=math ...]
"""

from __future__ import annotations

import argparse
import json

COLUMNS = ("mt-bench", "gsm8k", "math500", "svamp")


def taps_table(result: dict, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    summary = result["summary"]
    datasets = [d for d in COLUMNS if d in summary] + sorted(d for d in summary if d not in COLUMNS and d != "all")
    lines = ["| method | " + " | ".join(datasets) + " | average τ | speedup (all) | greedy match |",
             "|---|" + "---:|" * (len(datasets) + 3)]
    for method, row in summary["all"].items():
        if method == "none":
            continue
        taus = [summary[d][method]["acceptance_length"] for d in datasets]
        match = row.get("greedy_match_rate")
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(f"{t:.2f}" for t in taus)
                     + f" | {sum(taus) / len(taus):.2f} | {row['speedup']:.2f}× | "
                     + (f"{match:.0%}" if match is not None else "–") + " |")
    routed = [m for m, row in summary["all"].items() if row.get("routing")]
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
    parser.add_argument("result")
    parser.add_argument("--labels", default="", help="method=label pairs, comma-separated")
    args = parser.parse_args()
    labels = dict(pair.split("=", 1) for pair in args.labels.split(",") if "=" in pair)
    print(taps_table(json.loads(open(args.result).read()), labels))


if __name__ == "__main__":
    main()
