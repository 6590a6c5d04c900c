"""Where the time of one verification step goes: engine phases, then the target forward by operator.

    python benchmarks/profile_step.py --target embedded --drafter ngram --max-new-tokens 64

Prints (1) the engine's own split per step (draft / target forward / acceptance / other) from SpecStats and
(2) a torch.profiler table of the operators inside the steps, grouped (linear layers, attention, norms and
element-wise, cache, other), in ms per step. Figures go to docs/results.md with the result file they come from; nothing here is a test.
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from taskspec.data import load_prompts
from taskspec.drafters.kinds import build_drafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.models.target import load_target

GROUPS = {  # operator name fragment → group (first match wins)
    "scaled_dot_product": "attention", "softmax": "attention", "bmm": "attention",  # before "mm"
    "linear": "linear layers (incl. LM head)", "addmm": "linear layers (incl. LM head)",
    "mm": "linear layers (incl. LM head)",
    "index_select": "cache (append, compaction)", "cat": "cache (append, compaction)",
    "index_copy": "cache (append, compaction)",
    "pow": "norms and element-wise", "mean": "norms and element-wise", "rsqrt": "norms and element-wise",
    "mul": "norms and element-wise", "add": "norms and element-wise", "gelu": "norms and element-wise",
    "tanh": "norms and element-wise", "div": "norms and element-wise", "neg": "norms and element-wise",
    "sin": "norms and element-wise", "cos": "norms and element-wise", "embedding": "norms and element-wise",
}


def group_of(name: str) -> str:
    lowered = name.lower()
    for fragment, group in GROUPS.items():
        if fragment in lowered:
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="embedded")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--drafter", default="ngram")
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--prompt-index", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    target = load_target(args.target, args.dtype)
    drafter = build_drafter(args.drafter, target)
    prompt = load_prompts(args.dataset, limit=args.prompt_index + 1)[args.prompt_index].text
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    generate(target, drafter, prompt, GenerationConfig(max_new_tokens=8))  # warm-up

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = generate(target, drafter, prompt, config)
    s = result.stats
    steps = s.target_steps - s.requests  # verification steps (the prefill emitted the first token)
    print(f"target {target.name} ({args.dtype}), drafter {args.drafter}, {s.new_tokens} tokens in {steps} steps, "
          f"τ {s.acceptance_length:.2f}, {s.draft_nodes / steps:.1f} draft nodes/step, "
          f"threads {torch.get_num_threads()}\n")
    step_ms = 1000 * (s.time_total - s.time_prefill) / steps
    print("| phase (per step, profiler on) | ms | share |\n|---|---:|---:|")
    for label, seconds in (("draft (propose)", s.time_draft), ("target forward", s.time_target),
                           ("acceptance (verify_tree)", s.time_accept), ("other (compaction, bookkeeping)",
                                                                         s.time_overhead)):
        ms = 1000 * seconds / steps
        print(f"| {label} | {ms:.2f} | {ms / step_ms:.1%} |")
    print(f"| whole step | {step_ms:.2f} | 100% |")

    totals: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages():
        totals[group_of(event.key)] += event.self_cpu_time_total / 1000  # ms
    profiled = sum(totals.values())
    print("\n| operators (self CPU time, prefill included) | ms per step | share |\n|---|---:|---:|")
    for group, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {ms / steps:.2f} | {ms / profiled:.1%} |")
    print("\nTop operators:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
