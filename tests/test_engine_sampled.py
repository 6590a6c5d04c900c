"""Sampling through the whole engine: seeded reproducibility, and the distribution of the first tokens
generate() emits with a sampled model drafter equals the target's own (seeded Monte Carlo, chi-square).

False-failure rate: the seeds are fixed, so the test is deterministic; for an arbitrary seed a correct engine fails
the chi-square check (alpha = 1e-4, cells with expected count < 5 pooled) with probability about 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import tiny_llama
from taskspec.drafters import ModelDrafter, NgramDrafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.sampling import SamplingParams, logits_to_probs

SMALL_VOCAB = 8
PROMPT = [1, 5, 2, 5, 2]
ALPHA = 1e-4
RUNS = 1500


def peaked(target, scale: float = 25.0):
    """A random tiny model's next-token distribution is almost uniform; scaling its head makes it peaked, so the
    target and the drafter differ enough that a wrong acceptance rule shows in the counts."""
    with torch.no_grad():
        target.model.lm_head.weight.mul_(scale)
    return target


def exact_second_third_distribution(target, prompt, params) -> np.ndarray:
    """[V, V]: P(token 2 = b, token 3 = c) under the target's processed distribution, by enumeration over token 1.

    Token 1 comes from prefill; tokens 2 and 3 come from the first verification step (a depth-2 draft), so this is
    the pair the drafter and the acceptance rule decide."""
    def probs(ids):
        return logits_to_probs(target.model(input_ids=torch.tensor([ids])).logits[0, -1], params).double().numpy()

    out = np.zeros((SMALL_VOCAB, SMALL_VOCAB))
    with torch.inference_mode():
        p1 = probs(prompt)
        for a in np.flatnonzero(p1):
            p2 = probs(prompt + [int(a)])
            for b in np.flatnonzero(p2):
                out[b] += p1[a] * p2[b] * probs(prompt + [int(a), int(b)])
    return out


def pooled_chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    counts, probs = counts.ravel(), probs.ravel()
    assert counts[probs <= 0].sum() == 0, "emitted a token outside the target's processed support"
    support = probs > 0
    obs, exp = counts[support].astype(float), probs[support] / probs[support].sum() * counts.sum()
    order = np.argsort(exp)
    obs, exp = obs[order], exp[order]
    small = int(np.searchsorted(exp, 5.0))
    while small and small < len(exp) and exp[:small].sum() < 5.0:
        small += 1
    if small:
        obs = np.concatenate([[obs[:small].sum()], obs[small:]])
        exp = np.concatenate([[exp[:small].sum()], exp[small:]])
    return float(stats.chisquare(obs, exp).pvalue)


def second_third_counts(target, drafter, params) -> tuple[np.ndarray, int]:
    """RUNS seeded decodes of 4 tokens: [V, V] counts of (token 2, token 3) and the total target steps."""
    counts = np.zeros((SMALL_VOCAB, SMALL_VOCAB), np.int64)
    steps = 0
    for seed in range(RUNS):
        result = generate(target, drafter, PROMPT, GenerationConfig(max_new_tokens=4, sampling=params, seed=seed,
                                                                    stop_on_eos=False))
        counts[result.token_ids[1], result.token_ids[2]] += 1
        steps += result.stats.target_steps
    return counts, steps


@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(0.9, top_k=4, top_p=0.9)],
                         ids=["t1", "topk-topp"])
def test_generate_with_sampled_model_drafter_keeps_target_distribution(params):
    target, draft = peaked(tiny_llama(seed=0, vocab=SMALL_VOCAB)), peaked(tiny_llama(seed=1, vocab=SMALL_VOCAB))
    counts, steps = second_third_counts(target, ModelDrafter(draft, target, depth=2), params)
    # prefill + at least one step; 2 steps per run if every depth-2 draft were accepted, 4 if none ever were
    assert 2 * RUNS < steps < 4 * RUNS, "drafts were never or always accepted: the test would not exercise the rule"
    p = pooled_chi_square(counts, exact_second_third_distribution(target, PROMPT, params))
    assert p >= ALPHA, f"chi-square p = {p:.3g}"


def test_sampling_is_reproducible_by_seed():
    target = tiny_llama(seed=0)
    drafter = NgramDrafter()
    run = lambda seed: generate(target, drafter, [3, 17, 42, 8, 3, 17], GenerationConfig(  # noqa: E731
        max_new_tokens=24, sampling=SamplingParams(1.0, top_p=0.95), seed=seed, stop_on_eos=False)).token_ids
    assert run(7) == run(7)
    assert run(7) != run(8)


def _feature_drafter(target, **options):
    from taskspec.drafters.eagle import random_drafter

    # 6 of the 8 ids draftable: the residual distribution must still reach the two the drafter never proposes
    return random_drafter(target, kind="hass", draft_vocab_size=6, seed=1, **options)


def _lookup_then_feature(target):
    from taskspec.drafters.fallback import FallbackDrafter

    return FallbackDrafter(NgramDrafter(depth=2, min_ngram=2), _feature_drafter(target, depth=2, top_k=1))


def _specialists(target, seeds=(1, 2)):
    from taskspec.drafters.eagle import random_drafter

    return [random_drafter(target, kind="hass", draft_vocab_size=6, seed=s, depth=2, top_k=1) for s in seeds]


def _merged(target):
    from taskspec.drafters.compose import MergedTreeDrafter

    # seeds 1, 2, 1: the third tree duplicates the first, so merging must fold identical paths
    return MergedTreeDrafter(_specialists(target, (1, 2, 1)), ["a", "b", "c"])


def _score_routed(score, per_step):
    from taskspec.drafters.compose import ScoreRoutedDrafter

    return lambda target: ScoreRoutedDrafter(_specialists(target), ["a", "b"], score, per_step=per_step)


FEATURE_DRAFTERS = {
    "sampled-chain": lambda target: _feature_drafter(target, depth=2, top_k=1),  # residual rule
    "dynamic-tree": lambda target: _feature_drafter(target, depth=2, top_k=2, num_nodes=4),  # deterministic rule
    "ngram+feature": _lookup_then_feature,  # both rules, switching from step to step
    # compositions (drafters/compose.py): a choice made from draft scores, or a merged deterministic tree
    "merged-with-duplicates": _merged,
    "confidence-per-step": _score_routed("confidence", True),
    "entropy-per-request": _score_routed("entropy", False),
}


@pytest.mark.parametrize("make_drafter", FEATURE_DRAFTERS.values(), ids=FEATURE_DRAFTERS.keys())
def test_generate_with_feature_drafters_keeps_target_distribution(make_drafter):
    params = SamplingParams(1.0)
    target = peaked(tiny_llama(seed=0, vocab=SMALL_VOCAB))
    counts, steps = second_third_counts(target, make_drafter(target), params)
    assert 2 * RUNS < steps < 4 * RUNS, "drafts were never or always accepted: the test would not exercise the rule"
    p = pooled_chi_square(counts, exact_second_third_distribution(target, PROMPT, params))
    assert p >= ALPHA, f"chi-square p = {p:.3g}"
