"""Every composition strategy of a drafter set is lossless when sampling: the joint distribution of the first four
tokens generate() emits equals the target's own (tests/sampling_check.py: method, bounds, false-failure rate).

The set is built by hand on the tiny 8-token target: a generic feature drafter, two head specialists, two LoRA
specialists (random non-zero adapters on the generic drafter, merged on load by the real loader) and a fitted
target-feature router that sends the test prompt to the second specialist. Each strategy is composed by the set
itself (`compose`), as `--compose` does, and runs at T = 1 or with top-k / top-p; routed and score-routed members
draft sampled chains (the residual rule), merged strategies deterministic trees (the sample-and-descend rule).

Not covered here: the `embedding` and `sequence` routers (they need a sentence encoder or a tokenizer). Which router
picks the member does not matter to losslessness (the choice is made from the prompt before any draft is sampled);
the routing machinery they share with `target-feature` (PromptRoutedDrafter) is exercised here.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sampling_check import PROMPT, ExactJoint, assert_exercised, assert_lossless, decode_many, small_target
from taskspec.drafters.checkpoint import save_drafter
from taskspec.drafters.eagle import random_drafter
from taskspec.drafters.lora import DEFAULT_TARGETS, base_sha256, inject_lora, resolve_targets, save_adapter
from taskspec.engine.sampling import SamplingParams
from taskspec.models.fingerprint import target_fingerprint

PARAMS = {
    "t1": SamplingParams(1.0),
    "topk": SamplingParams(0.9, top_k=3),
    "topp": SamplingParams(1.1, top_p=0.8),
}
KIND, DRAFT_VOCAB = "eagle2", 6
CHAINS = {"depth": 2}  # the set's default: depth-2 chains, sampled at T > 0
TREES = {"depth": 2, "top_k": 2, "num_nodes": 4}  # dynamic trees: merged gives each specialist 2 nodes, -double 4
# Prompt lookup (ngram+) drafts only when the last two tokens occurred before: this prompt holds most bigrams of the
# tokens the target favours after it, so both the lookup and the strategy behind it draft in a run.
LOOKUP_PROMPT = [1, 3, 3, 7, 7, 4, 4, 3, 7, 3, 4, 7, 5, 2]


def _save_lora(base_folder, base, folder, target, seed: int) -> None:
    """A rank-2 LoRA adapter with random non-zero weights on `base` (saved at base_folder), written by save_adapter."""
    model = copy.deepcopy(base.model)
    inject_lora(model, rank=2, alpha=4.0, modules=resolve_targets(model, DEFAULT_TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:  # zero at initialisation: the adapter would change nothing
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    save_adapter(model, folder, target, base=base_folder, base_sha=base_sha256(base_folder), kind=KIND, rank=2,
                 alpha=4.0, targets=DEFAULT_TARGETS, draft_vocab_size=DRAFT_VOCAB)


def _save_router(path, target) -> None:
    """A target-feature router fitted to send both test prompts to task 1 ("b"): prompts whose pooled prefill state
    is near theirs are task 1, near their negation task 0."""
    from taskspec.tasks.routers import TargetFeatureRouter

    router = TargetFeatureRouter(target)
    pooled = router.features([PROMPT, LOOKUP_PROMPT])  # [2, hidden]: mean final hidden state over each prompt
    noise = np.random.default_rng(0).normal(0.0, 0.1 * np.abs(pooled).mean(), (12, pooled.shape[1]))
    features = np.concatenate([pooled[[0, 1, 0, 1, 0, 1]] + noise[:6], -pooled[[0, 1, 0, 1, 0, 1]] + noise[6:]])
    router.fit_features(features, [1] * 6 + [0] * 6).save(path)


@pytest.fixture(scope="module")
def set_folder(tmp_path_factory):
    """(target, folder of a drafter set with head and LoRA specialists for tasks a and b, and a router)."""
    target = small_target()
    folder = tmp_path_factory.mktemp("lossless") / "set"
    generic = random_drafter(target, kind=KIND, draft_vocab_size=DRAFT_VOCAB, seed=0)
    save_drafter(generic, folder / "generic")
    for task, seed in (("a", 2), ("b", 1)):  # b, the router's pick, is the better drafter of the two here
        head = random_drafter(target, kind=KIND, draft_vocab_size=DRAFT_VOCAB, seed=seed)
        save_drafter(head, folder / "heads" / task)
        _save_lora(folder / "generic", generic, folder / "lora" / task, target, seed=10 + seed)
    (folder / "routers").mkdir()
    _save_router(folder / "routers" / "target-feature.json", target)
    manifest = {"format": "taskspec-drafter-set", "version": 1, "target": target_fingerprint(target), "kind": KIND,
                "tasks": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}],
                "members": {"generic": "generic", "head:a": "heads/a", "head:b": "heads/b", "lora:a": "lora/a",
                            "lora:b": "lora/b"},
                "generic": "generic",
                "specialists": {"head": {"a": "head:a", "b": "head:b"}, "lora": {"a": "lora:a", "b": "lora:b"}},
                "routers": {"target-feature": "routers/target-feature.json"}, "default_router": "target-feature",
                "options": CHAINS}
    (folder / "drafterset.json").write_text(json.dumps(manifest))
    return target, folder


def load_set(target, folder, options: dict):
    import taskspec

    return taskspec.load_drafter_set(folder, target, **options)


def test_the_set_is_what_the_strategies_assume(set_folder):
    """LoRA members really differ from their base, and the router really picks b for the prompt."""
    target, folder = set_folder
    drafter_set = load_set(target, folder, CHAINS)
    base, adapted = drafter_set.member("generic"), drafter_set.member("lora:b")
    assert not torch.equal(base.model.fc.weight, adapted.model.fc.weight)
    routed = drafter_set.compose("routed")
    decode_many(target, routed, PARAMS["t1"], runs=2)
    assert dict(routed.choices) == {"b": 2}


# (strategy, set options, sampling): every strategy once, the filters spread over them
CASES = [
    ("routed", CHAINS, "t1"),
    ("routed@lora", CHAINS, "topk"),
    ("averaged", CHAINS, "topp"),
    ("averaged@lora", CHAINS, "t1"),
    ("confidence", CHAINS, "t1"),
    ("confidence:step", CHAINS, "topk"),
    ("entropy", CHAINS, "topp"),
    ("entropy:step@lora", CHAINS, "t1"),
    ("merged", TREES, "t1"),
    ("merged", TREES, "topk"),
    ("merged-double", TREES, "topp"),
    ("merged@lora", TREES, "t1"),
    ("ngram+routed", CHAINS, "topk"),  # on LOOKUP_PROMPT
]


@pytest.mark.parametrize("strategy, options, params_name", CASES,
                         ids=[f"{s}-{'trees' if o is TREES else 'chains'}-{p}" for s, o, p in CASES])
def test_every_strategy_keeps_the_target_joint_distribution(set_folder, strategy, options, params_name):
    target, folder = set_folder
    drafter = load_set(target, folder, options).compose(strategy)
    params = PARAMS[params_name]
    prompt = LOOKUP_PROMPT if strategy.startswith("ngram+") else PROMPT
    exact = ExactJoint(target, prompt, params)
    if params.top_k or params.top_p < 1.0:
        assert exact.excludes_tokens(), f"{params_name} never excluded a token: the filter would go untested"
    decoded = decode_many(target, drafter, params, prompt=prompt)
    assert_lossless(decoded, exact)
    assert_exercised(decoded)
    kind = strategy.removeprefix("ngram+").split("@")[0].split(":")[0]
    if kind in ("routed", "confidence", "entropy"):
        assert sum(drafter.choices.values()) > 0, "no routing choice was made"
    if kind == "routed":
        assert set(drafter.choices) == {"b"}  # the router's pick, not the fallback (a)
    if strategy.startswith("merged"):
        assert len(drafter.members) == 2 and all(m.deterministic for m in drafter.members)
    if strategy.startswith("ngram+"):
        assert min(drafter.proposals) > 0, f"lookup / strategy proposals {drafter.proposals}: one never ran"
