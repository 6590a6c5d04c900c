"""Sampling through the whole engine: seeded reproducibility, and the joint distribution of the first four tokens
generate() emits equals the target's own, over several verification steps (so the KV cache is rolled back and
compacted between them), for model and feature (EAGLE-2 / HASS) drafters, chains and trees, with and without top-k /
top-p. Negative controls inject a wrong acceptance rule and a skipped cache rollback into the engine and require
the same check to reject them.

Method, bounds and false-failure rate: tests/sampling_check.py. Compositions of drafter sets:
test_lossless_compositions.py; verify_tree alone, exhaustively: test_verify_distribution.py.
"""

from __future__ import annotations

import pytest

import taskspec.engine.decode as decode_module
from conftest import tiny_llama
from sampling_check import (PROMPT, SMALL_VOCAB, WRONG_P, ExactJoint, assert_exercised, assert_lossless,
                            check_counts, decode_many, peaked, single_thread, small_target)
from taskspec.drafters.eagle import random_drafter
from taskspec.drafters.fallback import FallbackDrafter
from taskspec.drafters.model import ModelDrafter
from taskspec.drafters.ngram import NgramDrafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.sampling import SamplingParams, logits_to_probs, sample
from taskspec.engine.verify import VerifyResult, verify_tree

PARAMS = {
    "t1": SamplingParams(1.0),
    "topk": SamplingParams(0.9, top_k=3),
    "topp": SamplingParams(1.1, top_p=0.8),
    "topk-topp": SamplingParams(0.9, top_k=4, top_p=0.9),
}


def exact_for(target, name: str) -> ExactJoint:
    """The exact joint under PARAMS[name]; with a filter, it must really exclude tokens after some prefix."""
    params = PARAMS[name]
    exact = ExactJoint(target, PROMPT, params)
    if params.top_k or params.top_p < 1.0:
        assert exact.excludes_tokens(), f"{name} never excluded a token: the filter would go untested"
    return exact


def feature(target, kind: str, shape: str):
    """An untrained feature drafter of 6 draft ids out of 8 (the residual must still reach the other two): a sampled
    depth-2 chain (residual rule at T > 0) or a 4-node dynamic tree (deterministic rule). The kinds differ only in
    training, so each gets its own seed (other weights) to test two drafters instead of one twice."""
    options = {"top_k": 1} if shape == "chain" else {"top_k": 2, "num_nodes": 4}
    return random_drafter(target, kind=kind, draft_vocab_size=6, seed=1 if kind == "hass" else 4, depth=2, **options)


def lookup_then_feature(target):
    return FallbackDrafter(NgramDrafter(depth=2, min_ngram=1), feature(target, "hass", "chain"))


DRAFTERS = {
    "model": lambda target: ModelDrafter(peaked(tiny_llama(seed=1, vocab=SMALL_VOCAB)), target, depth=2),
    "hass-chain": lambda target: feature(target, "hass", "chain"),
    "eagle2-chain": lambda target: feature(target, "eagle2", "chain"),
    "eagle2-tree": lambda target: feature(target, "eagle2", "tree"),
    "hass-tree": lambda target: feature(target, "hass", "tree"),
    "ngram+hass": lookup_then_feature,  # both rules, switching from step to step
}
CASES = [
    ("model", "t1"), ("model", "topk-topp"),
    ("hass-chain", "t1"), ("hass-chain", "topk"), ("hass-chain", "topp"), ("eagle2-chain", "topk-topp"),
    ("eagle2-tree", "t1"), ("eagle2-tree", "topk"), ("eagle2-tree", "topp"), ("hass-tree", "topk-topp"),
    ("ngram+hass", "t1"), ("ngram+hass", "topk-topp"),
]


@pytest.mark.parametrize("drafter_name, params_name", CASES, ids=[f"{d}-{p}" for d, p in CASES])
def test_generate_keeps_the_target_joint_distribution(drafter_name, params_name):
    target = small_target()
    drafter = DRAFTERS[drafter_name](target)
    decoded = decode_many(target, drafter, PARAMS[params_name])
    assert_lossless(decoded, exact_for(target, params_name))
    assert_exercised(decoded)
    if isinstance(drafter, FallbackDrafter):
        assert min(drafter.proposals) > 0, f"lookup / feature proposals {drafter.proposals}: one rule never ran"


# ---- negative controls: the same check rejects an engine with a wrong rule injected ---------------------------------
def resample_from_target_on_rejection(tree, logits, params, generator):
    """WRONG: when the first sampled draft is rejected, draws the bonus from the target instead of the residual."""
    out = verify_tree(tree, logits, params, generator)
    if out.accepted or not tree.sampled or params.greedy:
        return out
    return VerifyResult((), sample(logits_to_probs(logits[0], params), generator))


def skip_rollback(cache, start, rows):
    """WRONG: leaves the rejected draft rows in the target's KV cache."""


@pytest.mark.parametrize("attribute, wrong", [("verify_tree", resample_from_target_on_rejection),
                                              ("keep_rows", skip_rollback)], ids=["acceptance", "rollback"])
def test_check_rejects_an_engine_with_a_wrong_rule(monkeypatch, attribute, wrong):
    target = small_target()
    exact = exact_for(target, "t1")
    monkeypatch.setattr(decode_module, attribute, wrong)
    decoded = decode_many(target, feature(target, "hass", "chain"), PARAMS["t1"])
    assert_exercised(decoded)
    assert check_counts(decoded.counts, exact).pvalue < WRONG_P, str(check_counts(decoded.counts, exact))


def test_sampling_is_reproducible_by_seed():
    target = tiny_llama(seed=0)
    drafter = NgramDrafter()

    def run(seed):
        config = GenerationConfig(max_new_tokens=24, sampling=SamplingParams(1.0, top_p=0.95), seed=seed,
                                  stop_on_eos=False)
        with single_thread():
            return generate(target, drafter, [3, 17, 42, 8, 3, 17], config).token_ids

    assert run(7) == run(7)
    assert run(7) != run(8)
