"""Drafting time of the shipped HASS drafter with its decoder layer called directly (LeanBody, the default) and
through the Hugging Face model forward (the reference): same weights, interleaved per prompt, T=0, 3-token chain.

    python benchmarks/compare_lean_body.py 2        # argument: torch threads

Asserts both decode the same tokens; prints draft and target ms per step for each. Figures go to docs/results.md with the result file they come from.
"""
import torch, sys
from taskspec.models.target import load_target
from taskspec.drafters.loading import load_drafter
from taskspec.drafters.eagle import EagleDrafter
from taskspec.drafters.shipped import shipped_drafters
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.data import load_prompts
torch.set_num_threads(int(sys.argv[1]))
t = load_target("embedded")
lean = load_drafter(shipped_drafters(t)["hass"], t)
ref = EagleDrafter(lean.model, lean.vocab, t, "hass", lean=False)
prompts = load_prompts("gsm8k", limit=4) + load_prompts("mt-bench", limit=4)
cfg = GenerationConfig(max_new_tokens=96)
tot = {"lean": [0, 0, 0, 0], "reference": [0, 0, 0, 0]}
for p in prompts:
    outs = {}
    for name, d in (("lean", lean), ("reference", ref)):
        r = generate(t, d, p.text, cfg)
        outs[name] = r.token_ids
        s = r.stats
        tot[name][0] += s.time_draft; tot[name][1] += s.target_steps; tot[name][2] += s.time_target; tot[name][3] += s.time_total
    assert outs["lean"] == outs["reference"]
for name, (d, n, tt, total) in tot.items():
    print(f"{name}: draft {1000*d/n:.2f} ms/step, target {1000*tt/n:.1f} ms/step, total {total:.1f} s, {n} steps")
