"""`taskspec pipeline --config FILE`: from a target and a prompt log to a drafter set, in one resumable command.

    collect    the target's own greedy outputs on the training prompts      OUT/collect.jsonl
    detect     tasks by clustering the prompts' sentence embeddings         OUT/taskmap.json
    features   the target's hidden states and top-K logits on its outputs   OUT/features/
    build      generic drafter, per-task specialists, mixes, routers        OUT/drafter-set/
    evaluate   held-out prompts decoded with every method, side by side     OUT/evaluation.json, .md

Every stage is skipped when its output is complete and resumes when it is partial (collect, features and training
checkpoint by themselves), so a killed run continues where it stopped. OUT/pipeline.json records each stage's key, a
hash of the configuration it depends on; a folder made with a different configuration is refused rather than
mixed. The configuration (pipeline_config.py, TOML or YAML) is checked before anything slow runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from .io_utils import write_json_atomic, write_text_atomic
from .pipeline_config import (  # noqa: F401
    EvaluateSection,
    PipelineConfig,
    PipelineError,
    PromptsSection,
    _replace,
    build_config,
    load_config,
    parse_config,
)

STAGES = ("collect", "detect", "features", "build", "evaluate")
STATE = "pipeline.json"


# ---- the run ---------------------------------------------------------------------------------------------------
@dataclass
class PipelineRun:
    """What one `run_pipeline` call did: per stage "done" (this run), "skipped" (complete before) or "resumed"."""

    out: Path
    stages: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def run_pipeline(config: PipelineConfig, progress: bool = True, log=print, target=None) -> PipelineRun:
    """Run (or resume) every stage; returns what ran and the summary written to OUT/summary.json."""
    from .collect import collect, read_records
    from .data import load_prompts
    from .engine.decode import GenerationConfig
    from .models.target import load_target
    from .train.build import build_drafter_set
    from .train.features import build_feature_cache, examples_from_outputs

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, config)
    run = PipelineRun(out=out)
    train_prompts, eval_prompts = split_prompts(config.prompts, load_prompts)
    log(f"[prompts] {len(train_prompts)} training and {len(eval_prompts)} held-out prompts from "
        f"{', '.join(config.prompts.sources)}")
    if target is None:
        log(f"[target] loading {config.target!r} ({config.dtype})")
        target = load_target(config.target, config.dtype)
    if target.tokenizer is None:
        raise PipelineError(f"target {config.target!r} has no tokenizer; the pipeline reads and writes text")

    # 1. collect: the target's own outputs (self-distillation data), one flushed record per prompt
    gen = GenerationConfig(max_new_tokens=config.collect.max_new_tokens)
    collected = out / "collect.jsonl"
    with state.stage("collect", run, log, key=(config.target, config.prompts, config.collect.max_new_tokens),
                     output=collected) as todo:
        if todo:
            collect(target, train_prompts, collected, config=gen, progress=progress)
    output_ids = {r["id"]: r["output_ids"] for r in read_records(collected)}

    # 2. detect: tasks from the training prompts
    taskmap = out / "taskmap.json"
    # task names only label the build's members: renaming the tasks must not redo the clustering
    detect_key = (config.prompts, _replace(config.detect, task_names=()))
    with state.stage("detect", run, log, key=detect_key, output=taskmap) as todo:
        if todo:
            from .tasks import TaskDetector

            d = config.detect
            detector = TaskDetector(encoder=d.encoder, k=d.k or None, k_min=d.k_range[0], k_max=d.k_range[1],
                                    stop_words=d.stop_words, seed=d.seed, target=target)
            detector.fit([p.text for p in train_prompts], progress=progress)
            detector.save(taskmap)
            for task in detector.descriptions_:
                log(f"  task {task.task}: {task.size} prompts ({', '.join(task.keywords[:6])})")

    # 3. features over prompt + the target's output
    features = out / "features"
    with state.stage("features", run, log, key=(config.target, config.prompts, config.collect),
                     output=features / "manifest.json") as todo:
        if todo:
            examples = examples_from_outputs(target, train_prompts, output_ids, config.collect.max_tokens)
            if not examples:
                raise PipelineError(f"{collected}: no non-empty output to learn from")
            build_feature_cache(target, examples, features, top_k=config.collect.top_k, progress=progress,
                                meta={"data": ",".join(config.prompts.sources), "source": "target",
                                      "max_tokens": config.collect.max_tokens})

    # 4. build: generic, specialists, mixes, routers → the drafter set (each training run resumes by itself)
    b = config.build
    drafter_set = out / "drafter-set"
    with state.stage("build", run, log, key=(config.target, config.prompts, config.collect, config.detect, b),
                     output=drafter_set / "drafterset.json") as todo:
        if todo:
            build_drafter_set(target, taskmap, [str(features)], drafter_set, build_config(b),
                              task_names=list(config.detect.task_names) or None, progress=progress, log=log)

    # 5. evaluate on the held-out prompts: plain decoding, the methods asked for and the set's strategies
    e = config.evaluate
    evaluation = out / "evaluation.json"
    key = (config.target, config.prompts, config.collect, config.detect, b, e)
    if eval_prompts:
        with state.stage("evaluate", run, log, key=key, output=evaluation) as todo:
            if todo:
                evaluate(target, eval_prompts, drafter_set, e, evaluation, progress=progress)
    else:
        log("[evaluate] skipped: prompts.eval_limit is 0 (no held-out prompts)")
        run.stages["evaluate"] = "skipped"

    run.summary = summarize(out, run)
    write_json_atomic(out / "summary.json", run.summary)
    return run


def split_prompts(section: PromptsSection, load_prompts) -> tuple[list, list]:
    """Per source: `limit` prompts train and the next `eval_limit` are held out (never trained on), taken from the
    start of the source or, with sample = "random", from a seeded shuffle of all of it (a file sorted by origin,
    like MathInstruct, is otherwise represented by its first origin only).

    Duplicate prompt texts are kept once (the first), so no held-out prompt was seen in training."""
    import random

    train, held_out, seen = [], [], set()
    wanted = section.limit + section.eval_limit
    for source in section.sources:
        if section.sample == "random":
            prompts = load_prompts(source, data_dir=section.data_dir or None)
            prompts = random.Random(f"{section.seed}:{source}").sample(prompts, min(len(prompts), 2 * wanted))
        else:
            prompts = load_prompts(source, data_dir=section.data_dir or None, limit=wanted)
        unique = []
        for prompt in prompts:
            if prompt.text.strip() and prompt.text not in seen:
                seen.add(prompt.text)
                unique.append(prompt)
        unique = unique[:wanted]
        n_eval = min(section.eval_limit, len(unique) // 5) if len(unique) < wanted else section.eval_limit
        train += unique[: len(unique) - n_eval]
        held_out += unique[len(unique) - n_eval:]
    if len(train) < 2:
        raise PipelineError(f"prompts.sources {list(section.sources)}: {len(train)} usable training prompt(s); "
                            "expected at least 2 (non-empty, distinct)")
    return train, held_out


def evaluate(target, prompts, drafter_set_dir: Path, section: EvaluateSection, out: Path, progress: bool = True):
    """`taskspec bench` on the held-out prompts with the drafter set: methods and strategies side by side."""
    from .bench.methods import split_method_list
    from .bench.report import markdown_tables
    from .bench.runner import run_bench
    from .engine.decode import GenerationConfig
    from .engine.sampling import SamplingParams
    from .tasks.drafter_sets import load_drafter_set

    drafter_set = load_drafter_set(drafter_set_dir, target)
    methods = split_method_list(list(section.methods))
    if "none" not in methods:
        methods = ["none", *methods]  # the denominator of every speedup
    methods += [s for s in section.compose if s not in methods]
    config = GenerationConfig(max_new_tokens=section.max_new_tokens,
                              sampling=SamplingParams(temperature=section.temperature))
    meta = {"command": " ".join(["taskspec", *sys.argv[1:]]), "stage": "pipeline evaluate",
            "drafter_set": {"folder": str(drafter_set_dir), "tasks": drafter_set.manifest["tasks"]}}
    result = run_bench(target, prompts, methods, config, progress=progress, meta=meta,
                       drafter_set=drafter_set).to_dict()
    write_text_atomic(out.with_suffix(".md"), markdown_tables(result))
    write_json_atomic(out, result)
    return result


def summarize(out: Path, run: PipelineRun) -> dict:
    """Tasks, members, router agreement and the evaluation table, from the files the stages wrote."""
    summary: dict = {"out": str(out), "stages": run.stages, "seconds": run.seconds}
    manifest_path = out / "drafter-set" / "drafterset.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        summary["tasks"] = [{k: t[k] for k in ("name", "examples", "keywords")} for t in manifest["tasks"]]
        summary["members"] = sorted(manifest["members"])
    routers = out / "drafter-set" / "routers" / "evaluation.json"
    if routers.is_file():
        summary["routers"] = json.loads(routers.read_text())
    evaluation = out / "evaluation.json"
    if evaluation.is_file():
        table = json.loads(evaluation.read_text())["summary"]["all"]
        summary["evaluation"] = {m: {"tau": v["acceptance_length"], "tokens_per_second": v["tokens_per_second"],
                                     "speedup": v["speedup"]} for m, v in table.items()}
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"pipeline output: {summary['out']}"]
    for stage, what in summary["stages"].items():
        seconds = summary["seconds"].get(stage)
        lines.append(f"  {stage:<9} {what}" + (f" ({seconds:.0f} s)" if seconds else ""))
    for task in summary.get("tasks", []):
        lines.append(f"  task {task['name']}: {task['examples']} examples ({', '.join(task['keywords'][:5])})")
    for kind, report in summary.get("routers", {}).items():
        accuracy = report.get("held_out_accuracy", report.get("accuracy"))
        lines.append(f"  router {kind}: held-out agreement with the task map {accuracy}")
    if "evaluation" in summary:
        lines += ["", "| method | τ | tokens/s | speedup |", "|---|---:|---:|---:|"]
        for method, v in summary["evaluation"].items():
            speedup = f"{v['speedup']:.2f}×" if v["speedup"] else "–"
            lines.append(f"| {method} | {v['tau']:.2f} | {v['tokens_per_second']:.1f} | {speedup} |")
    lines.append(f"\nuse it: taskspec generate --drafter-set {summary['out']}/drafter-set --prompt \"...\"")
    return "\n".join(lines)


class _State:
    """OUT/pipeline.json: per stage, the key of the configuration it was made with and whether it finished."""

    def __init__(self, out: Path, config: PipelineConfig):
        self.path = out / STATE
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}
        self.data["config"] = config.to_dict()

    def stage(self, name: str, run: PipelineRun, log, key, output: Path):
        return _Stage(self, name, run, log, _key(key), output)

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


class _Stage:
    """Context manager for one stage; yields True when there is work to do. A stage whose recorded key differs from
    this configuration's is refused (the folder would mix two configurations)."""

    def __init__(self, state: _State, name: str, run: PipelineRun, log, key: str, output: Path):
        self.state, self.name, self.run, self.log, self.key, self.output = state, name, run, log, key, output

    def __enter__(self) -> bool:
        record = self.state.data["stages"].get(self.name)
        if record and record["key"] != self.key:
            raise PipelineError(
                f"{self.state.path.parent}: stage {self.name!r} was made with a different configuration; "
                f"use a new output folder, or delete {self.state.path.parent} to start over")
        self.finished = bool(record and record.get("done")) and self.output.exists()
        self.status = "skipped" if self.finished else ("resumed" if record else "done")
        self.log(f"[{self.name}] " + {"skipped": "complete, skipped", "resumed": "resuming",
                                      "done": "starting"}[self.status])
        if not record:
            self.state.data["stages"][self.name] = {"key": self.key, "done": False}
            self.state.save()
        self.start = time.perf_counter()
        return not self.finished

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.state.data["stages"][self.name]["done"] = True
            self.state.save()
            self.run.stages[self.name] = self.status
            self.run.seconds[self.name] = round(time.perf_counter() - self.start, 1)
        return False


def _key(parts) -> str:
    text = json.dumps(parts, default=lambda o: asdict(o) if is_dataclass(o) else str(o), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
