"""Run several methods over the same prompts in one process, interleaved per prompt, and aggregate.

The machine is shared and noisy, so methods take turns on every prompt (their order rotates from prompt to prompt)
and every speedup is a ratio measured in the same run. Greedy runs also report how often each method's output
equals `none`'s and, for each divergence, the target's two best logits at that position (bf16 near-ties).
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..data import Prompt
from ..engine.decode import GenerationConfig, encode_prompt
from ..engine.stats import SpecStats
from ..models.causal_lm import CausalLM
from .methods import build_method
from .result_file import ALL, BASELINE



@dataclass
class BenchResult:
    meta: dict
    runs: list[dict] = field(default_factory=list)  # one per (prompt, method)
    summary: dict = field(default_factory=dict)  # dataset → method → aggregate (dataset "all" = every prompt)
    mismatches: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"meta": self.meta, "summary": self.summary, "mismatches": self.mismatches, "runs": self.runs}


def run_bench(target: CausalLM, prompts: list[Prompt], method_specs: list[str], config: GenerationConfig,
              progress: bool = True, warmup: bool = True, meta: dict | None = None, drafter_set=None) -> BenchResult:
    methods = [build_method(spec, target, drafter_set) for spec in method_specs]
    encoded = [encode_prompt(target, p.text) for p in prompts]
    if warmup:  # first calls pay for kernel selection and allocation; keep them out of the numbers
        for method in methods:
            method.run(encoded[0], GenerationConfig(max_new_tokens=4, sampling=config.sampling, seed=config.seed))
    result = BenchResult(meta=_meta(target, prompts, method_specs, config, meta))
    bar = tqdm(total=len(prompts) * len(methods), desc="bench", unit="run", disable=not progress)
    for index, (prompt, ids) in enumerate(zip(prompts, encoded)):
        shift = index % len(methods)
        for method in methods[shift:] + methods[:shift]:
            run = method.run(ids, config)
            result.runs.append({"prompt_id": prompt.id, "dataset": prompt.source, "method": method.name,
                                "token_ids": run.token_ids, "stats": run.stats.to_dict(), "_stats": run.stats})
            if run.routing is not None:
                result.runs[-1]["routing"] = run.routing
            bar.update()
            bar.set_postfix_str(f"{method.name}: {run.stats.tokens_per_second:.1f} tok/s")
    bar.close()
    if config.sampling.greedy and BASELINE in method_specs:
        result.mismatches = _explain_mismatches(target, result.runs, dict(zip((p.id for p in prompts), encoded)))
    result.summary = summarise(result.runs, method_specs, greedy=config.sampling.greedy)
    for run in result.runs:
        run.pop("_stats")
    return result


def summarise(runs: list[dict], method_specs: list[str], greedy: bool) -> dict:
    datasets = [ALL] + sorted({r["dataset"] for r in runs})
    baseline_tokens = {r["prompt_id"]: r["token_ids"] for r in runs if r["method"] == BASELINE}
    summary: dict = {}
    for dataset in datasets:
        rows = [r for r in runs if dataset == ALL or r["dataset"] == dataset]
        table = {}
        for spec in method_specs:
            mine = [r for r in rows if r["method"] == spec]
            total = sum((r["_stats"] for r in mine), SpecStats())
            entry = total.to_dict()
            entry["prompts"] = len(mine)
            routed = [r["routing"] for r in mine if "routing" in r]
            if routed:  # the routing split: how often each specialist drafted (per request, or per step)
                split: dict[str, int] = {}
                for choice in routed:
                    for label, count in choice.items():
                        split[label] = split.get(label, 0) + count
                entry["routing"] = dict(sorted(split.items()))
            if greedy and baseline_tokens:
                same = [r["token_ids"] == baseline_tokens.get(r["prompt_id"]) for r in mine]
                entry["greedy_match_rate"] = round(sum(same) / len(same), 4) if same else None
            table[spec] = entry
        base_tps = table.get(BASELINE, {}).get("tokens_per_second")
        for entry in table.values():
            entry["speedup"] = round(entry["tokens_per_second"] / base_tps, 4) if base_tps else None
        summary[dataset] = table
    return summary


@torch.inference_mode()
def _explain_mismatches(target: CausalLM, runs: list[dict], prompt_ids: dict[str, list[int]]) -> list[dict]:
    """For each greedy output that differs from `none`: where, and how close the target's top two logits were."""
    baseline = {r["prompt_id"]: r["token_ids"] for r in runs if r["method"] == BASELINE}
    out = []
    for run in runs:
        ref = baseline.get(run["prompt_id"])
        if run["method"] == BASELINE or ref is None or run["token_ids"] == ref:
            continue
        mine = run["token_ids"]
        pos = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
        entry = {"prompt_id": run["prompt_id"], "method": run["method"], "position": pos,
                 "none_token": ref[pos] if pos < len(ref) else None,
                 "method_token": mine[pos] if pos < len(mine) else None}
        if entry["none_token"] is not None and entry["method_token"] is not None:
            context = torch.tensor(prompt_ids[run["prompt_id"]] + ref[:pos])
            logits = target.model(input_ids=context.unsqueeze(0), use_cache=False).logits[0, -1].float()
            top = torch.topk(logits, 2)
            entry.update(top2_tokens=top.indices.tolist(), top2_logits=[round(x, 4) for x in top.values.tolist()],
                         top2_gap=round(float(top.values[0] - top.values[1]), 4))
        out.append(entry)
    return out


def _meta(target: CausalLM, prompts: list[Prompt], method_specs, config: GenerationConfig, extra) -> dict:
    import transformers

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": target.name,
        "target_fingerprint": target.fingerprint,
        "dtype": str(target.dtype).removeprefix("torch."),
        "linear_kernel": target.linear_kernel,
        "attention_kernel": target.attention_kernel,
        "methods": list(method_specs),
        "datasets": sorted({p.source for p in prompts}),
        "prompts": len(prompts),
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.sampling.temperature,
        "top_k": config.sampling.top_k,
        "top_p": config.sampling.top_p,
        "seed": config.seed,
        "machine": {"cpu_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        **(extra or {}),
    }
