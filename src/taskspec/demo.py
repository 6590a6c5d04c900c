"""`taskspec demo`: the whole idea on real prompts in a few minutes.

A sample of real prompts (ShareGPT, from its package, and GSM8K, MATH-500, MT-Bench and SVAMP when the data folder
is there) is sorted into tasks by the drafter set's task map; every prompt is decoded with plain decoding, prompt
lookup, the generic drafter, the routed specialists, merged trees and prompt lookup in front of the routed
specialists (`ngram+routed`), taking turns as in `taskspec bench`; the
result is one table per detected task and a report folder (report.md and plots, `taskspec report`).

Without a drafter set for the target (another target, or none shipped), the demo decodes the built-in example
prompts with the methods given, one table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .data import Prompt
from .demo_prompts import DEMO_PROMPTS
from .errors import TaskspecError

# (dataset, prompts): ShareGPT always (its package is a dependency), the benchmarks when the data folder is present
DEMO_SOURCES = (("sharegpt", 4), ("gsm8k", 2), ("math500", 2), ("mt-bench", 2), ("svamp", 2))
MAX_PROMPT_CHARS = 600  # long ShareGPT prompts would spend the demo's minutes on prefill
SET_METHODS = ("none", "ngram", "single", "routed", "merged", "ngram+routed")


def builtin_prompts() -> list[Prompt]:
    return [Prompt(id=f"demo/{name}", text=text, source="demo", meta={}) for name, text in DEMO_PROMPTS]


def demo_prompts(data_dir=None, sources=DEMO_SOURCES, log=print) -> list[Prompt]:
    """A fixed, evenly spread sample of short prompts from each source that is available."""
    from .data import load_prompts

    prompts, missing = [], []
    for name, count in sources:
        try:
            rows = load_prompts(name, data_dir=data_dir, limit=400)
        except TaskspecError:
            missing.append(name)
            continue
        short = [p for p in rows if p.text.strip() and len(p.text) <= MAX_PROMPT_CHARS]
        step = max(1, len(short) // count)
        prompts += short[::step][:count]
    if missing:
        log(f"[demo] not found: {', '.join(missing)} (set --data-dir or $TASKSPEC_DATA to include them); "
            "adding the built-in examples")
        prompts += builtin_prompts()
    return prompts


def tag_with_tasks(prompts: list[Prompt], drafter_set) -> tuple[list[Prompt], object]:
    """Each prompt with its detected task as `source` (so the bench groups by task) and its dataset in meta."""
    from .tasks import TaskDetector

    detector = TaskDetector.load(drafter_set.folder / drafter_set.manifest.get("taskmap", "taskmap.json"),
                                 target=drafter_set.target)
    names = {t["id"]: t["name"] for t in drafter_set.manifest["tasks"]}
    tasks = detector.predict([p.text for p in prompts])
    tagged = [replace(p, source=names.get(int(t), f"task{int(t)}"), meta={**p.meta, "dataset": p.source})
              for p, t in zip(prompts, tasks)]
    return tagged, detector


def run_demo(target, prompts: list[Prompt], methods: list[str], config, out_dir: str | Path, drafter_set=None,
             progress: bool = True, log=print, command: str = "taskspec demo") -> dict:
    """Decode, print one table per task, write out_dir/result.json and the report; returns the result."""
    from .bench.result_file import prompt_map
    from .bench.report import markdown_tables, write_report
    from .bench.runner import run_bench
    from .io_utils import write_json_atomic

    out_dir = Path(out_dir)
    detector = None
    if drafter_set is not None:
        prompts, detector = tag_with_tasks(prompts, drafter_set)
        log(f"[demo] {len(prompts)} prompts, tasks detected with {drafter_set.folder}/taskmap.json:")
        for task in dict.fromkeys(p.source for p in prompts):
            mine = [p for p in prompts if p.source == task]
            datasets = ", ".join(sorted({p.meta["dataset"] for p in mine}))
            example = mine[0].text.replace("\n", " ")[:70]
            log(f"  {task}: {len(mine)} prompts ({datasets}), e.g. \"{example}\"")
    meta = {"command": command}
    if drafter_set is not None:
        meta["drafter_set"] = {"folder": str(drafter_set.folder), "tasks": drafter_set.manifest["tasks"]}
    result = run_bench(target, prompts, methods, config, progress=progress, meta=meta,
                       drafter_set=drafter_set).to_dict()
    if detector is not None:
        result["prompt_map"] = prompt_map([p.text for p in prompts], [p.id for p in prompts], detector)
        for point, prompt in zip(result["prompt_map"], prompts):  # name the task, mark the true dataset
            point.update(task=prompt.source, dataset=prompt.meta["dataset"])
    print(markdown_tables(result))
    write_json_atomic(out_dir / "result.json", result)
    report = write_report(result, out_dir, source=str(out_dir / "result.json"))
    log(f"[demo] wrote {out_dir / 'result.json'} and {report}")
    return result
