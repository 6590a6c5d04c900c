"""Greedy exactness: every drafter, chain or tree, reproduces plain greedy decoding token for token (fp32)."""

from __future__ import annotations

import pytest
import torch

from conftest import PROMPT, reference_greedy, tiny_llama
from taskspec.drafters.model import ModelDrafter
from taskspec.drafters.ngram import NgramDrafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.drafter import NoDrafter
from taskspec.engine.tree import DraftTree

NEW = 40
CONFIG = GenerationConfig(max_new_tokens=NEW, stop_on_eos=False)


class OracleDrafter:
    """Knows the target's greedy continuation. mode: 'all' proposes it, 'none' proposes wrong tokens,
    'part' gets the first `right` tokens of each draft right. tree=True hides the right path among wrong branches."""

    needs_target_hidden = False
    name = "oracle"

    def __init__(self, prompt, continuation, vocab, depth=4, mode="all", right=2, tree=False):
        self.full = list(prompt) + list(continuation)
        self.vocab, self.depth, self.mode, self.right, self.tree = vocab, depth, mode, right, tree

    def reset(self, prompt_ids, target_hidden=None):
        pass

    def observe(self, committed, target_hidden=None):
        pass

    def propose(self, context):
        n = len(context.tokens)
        assert context.tokens == self.full[:n], "engine committed a token the target would not have"
        truth = self.full[n : n + min(self.depth, context.max_depth)]
        wrong = lambda t: (t + 1) % self.vocab  # noqa: E731
        if self.mode == "all":
            draft = truth
        elif self.mode == "none":
            draft = [wrong(t) for t in truth]
        else:
            draft = truth[: self.right] + [wrong(t) for t in truth[self.right :]]
        if not self.tree:
            return DraftTree.chain(draft)
        decoys = [[wrong(wrong(t)) for t in truth], [wrong(truth[0])] + truth[1:]] if truth else []
        return DraftTree.from_paths(decoys[:1] + [draft] + decoys[1:])


@pytest.mark.parametrize("tree", [False, True], ids=["chain", "tree"])
@pytest.mark.parametrize("mode", ["all", "none", "part"])
def test_oracle_drafts_keep_greedy_output(tiny_target, mode, tree):
    expected = reference_greedy(tiny_target, PROMPT, NEW)
    drafter = OracleDrafter(PROMPT, expected, tiny_target.vocab_size, depth=4, mode=mode, tree=tree)
    result = generate(tiny_target, drafter, PROMPT, CONFIG)
    assert result.token_ids == expected
    stats = result.stats
    assert stats.draft_nodes > 0
    if mode == "all":
        # prefill emits 1 token, then every step emits depth 4 + bonus (the last step what is left)
        assert stats.target_steps == 1 + -(-(NEW - 1) // 5)
    elif mode == "none":
        assert stats.acceptance_length == 1.0 and sum(stats.accepted_per_depth) == 0
    else:
        # every draft at depths 1-2 is accepted (the last steps may draft fewer), never one deeper
        assert stats.accepted_per_depth == stats.reached_per_depth[:2]
        assert stats.accepted_per_depth[0] >= stats.target_steps - 2  # minus prefill and the last step
        assert len(stats.reached_per_depth) == 3


def test_accept_all_emits_depth_plus_bonus_per_step(tiny_target):
    expected = reference_greedy(tiny_target, PROMPT, NEW)
    result = generate(tiny_target, OracleDrafter(PROMPT, expected, tiny_target.vocab_size, depth=4), PROMPT, CONFIG)
    assert result.token_ids == expected
    new = NEW + 1  # 41 = prefill's token + 8 full steps of 5
    result = generate(tiny_target, OracleDrafter(PROMPT, reference_greedy(tiny_target, PROMPT, new),
                                                 tiny_target.vocab_size, depth=4), PROMPT,
                      GenerationConfig(max_new_tokens=new, stop_on_eos=False))
    assert result.stats.target_steps == 1 + (new - 1) // 5
    assert result.stats.accepted_per_depth == [(new - 1) // 5] * 4


@pytest.mark.parametrize("drafter_name", ["none", "ngram", "ngram-tree", "self-chain", "self-tree", "noisy-tree"])
def test_real_drafters_keep_greedy_output(tiny_target, drafter_name):
    expected = reference_greedy(tiny_target, PROMPT, NEW)
    drafters = {
        "none": lambda: NoDrafter(),
        "ngram": lambda: NgramDrafter(depth=5),
        "ngram-tree": lambda: NgramDrafter(depth=5, branches=4),
        "self-chain": lambda: ModelDrafter(tiny_target, tiny_target, depth=4),
        "self-tree": lambda: ModelDrafter(tiny_target, tiny_target, depth=3, top_k=3, num_nodes=12),
        "noisy-tree": lambda: ModelDrafter(_noisy_copy(tiny_target), tiny_target, depth=3, top_k=2, num_nodes=8),
    }
    result = generate(tiny_target, drafters[drafter_name](), PROMPT, CONFIG)
    assert result.token_ids == expected
    accepted = sum(result.stats.accepted_per_depth)
    if drafter_name == "none":
        assert result.stats.target_steps == NEW
    elif drafter_name.startswith("self"):
        assert result.stats.acceptance_length > 2.5  # a drafter equal to the target is right almost always
    else:
        assert accepted > 0 and result.stats.acceptance_length < 4.9  # some, not all


def test_engine_none_equals_hf_generate(tiny_target):
    with torch.inference_mode():
        out = tiny_target.model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW, do_sample=False,
                                         eos_token_id=None, pad_token_id=0)
    assert generate(tiny_target, NoDrafter(), PROMPT, CONFIG).token_ids == out[0, len(PROMPT):].tolist()


def test_stops_at_max_new_tokens_with_long_drafts(tiny_target):
    expected = reference_greedy(tiny_target, PROMPT, 7)
    drafter = OracleDrafter(PROMPT, expected + [0] * 10, tiny_target.vocab_size, depth=6)
    result = generate(tiny_target, drafter, PROMPT, GenerationConfig(max_new_tokens=7, stop_on_eos=False))
    assert result.token_ids == expected and result.stats.new_tokens == 7


def test_stops_after_eos():
    target = tiny_llama()
    expected = reference_greedy(target, PROMPT, NEW)
    eos = expected[5]
    target.model.generation_config.eos_token_id = eos
    result = generate(target, NgramDrafter(), PROMPT, GenerationConfig(max_new_tokens=NEW))
    assert result.token_ids == expected[: expected.index(eos) + 1]


def _noisy_copy(target):
    """The target with perturbed weights: a drafter that agrees often but not always."""
    import copy

    from taskspec.models.causal_lm import CausalLM

    model = copy.deepcopy(target.model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05 * p.std())
    return CausalLM(model, name="noisy")
