"""End-to-end sampling check shared by test_engine_sampled.py and test_lossless_compositions.py.

Decode the first LENGTH new tokens of one prompt RUNS times through generate() (seeds 0..RUNS-1) and compare the
counts of the whole sequence (t1, ..., t_LENGTH) with the target's exact joint distribution. LENGTH = 4 takes
prefill (t1) plus one to three verification steps, so the tokens after a rejected draft come from a forward over a
rolled-back KV cache: a rollback, compaction or acceptance bug shows up in the joint.

The exact distribution comes from the model's own forward over the whole sequence (no cache, none of the engine's
code but logits_to_probs), enumerated over every prefix of probability >= FLOOR; the sequences below pruned prefixes
form one "rare" cell of known total mass. Cells with expected count < 5 are pooled (a partition fixed by the
expected counts alone), then

  * support: no emitted sequence may contain a token outside the processed support (top-k / top-p);
  * chi-square goodness of fit (scipy.stats.chisquare) over the pooled cells must give p >= ALPHA;
  * total variation over the pooled cells must stay below the Weissman et al. (2003) bound at ALPHA:
    P(||p_hat - p||_1 >= eps) <= (2^k - 2) exp(-N eps^2 / 2), TV bound eps / 2.

False-failure rate: the seeds are fixed, so every test is deterministic; for arbitrary seeds a correct engine fails
one test with probability <= 2 * ALPHA = 2e-4 (chi-square asymptotics with every pooled cell >= 5 expected).
Negative controls (a wrong acceptance rule, a skipped rollback) must drive the chi-square p-value below WRONG_P.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from conftest import tiny_llama
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.sampling import SamplingParams, logits_to_probs

SMALL_VOCAB = 8
PROMPT = [1, 5, 2, 5, 2]
LENGTH = 4  # new tokens per run: prefill + up to three verification steps with depth-2 drafts
RUNS = 600
ALPHA = 1e-4
WRONG_P = 1e-8
FLOOR = 1e-7  # prefixes less likely than this are not expanded (their mass is the "rare" cell)


def peaked(target, scale: float = 25.0):
    """A random tiny model's next-token distribution is almost uniform; scaling its head makes it peaked, so the
    target and a drafter differ enough that a wrong acceptance rule shows in the counts."""
    with torch.no_grad():
        target.model.lm_head.weight.mul_(scale)
    return target


def small_target(seed: int = 0, attention_scale: float = 10.0):
    """The tiny target every end-to-end distribution test decodes with (8 tokens, fp32): peaked, and with its
    attention outputs scaled up. At random initialisation the residual stream drowns the attention, so the next
    token depends on the last one almost alone (changing the one before moves the distribution by a total variation
    of ~0.02); scaled by 10 it moves it by ~0.2, so a stale, missing or misplaced cache row shows in the counts."""
    target = peaked(tiny_llama(seed=seed, vocab=SMALL_VOCAB))
    with torch.no_grad():
        for layer in target.model.model.layers:
            layer.self_attn.o_proj.weight.mul_(attention_scale)
    return target


@contextmanager
def single_thread():
    """Tiny models run fastest on one thread, and on a shared 2-core machine several threads per process make every
    forward wait on the others (~100x slower measured); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ExactJoint:
    """P(t1..t_LENGTH) of `target` after `prompt` under `params`, from uncached full forwards of the model itself."""

    def __init__(self, target, prompt: list[int], params: SamplingParams, length: int = LENGTH):
        self.target, self.prompt, self.params = target, list(prompt), params
        self._rows: dict[tuple[int, ...], np.ndarray] = {}
        level = {(): 1.0}  # prefix → probability, every prefix at least FLOOR likely
        with single_thread():
            for _ in range(length):
                self._compute_rows(list(level))
                level = {(*prefix, int(t)): mass * self._rows[prefix][t] for prefix, mass in level.items()
                         for t in np.flatnonzero(self._rows[prefix]) if mass * self._rows[prefix][t] >= FLOOR}
        self.cells = level  # full sequences under unpruned prefixes → probability
        self.rare_mass = max(0.0, 1.0 - sum(self.cells.values()))

    @torch.inference_mode()
    def _compute_rows(self, prefixes: list[tuple[int, ...]]) -> None:
        """One batched forward over prompt + prefix for prefixes of one length → [V] processed rows."""
        ids = torch.tensor([self.prompt + list(prefix) for prefix in prefixes])  # [B, len]
        logits = self.target.model(input_ids=ids).logits[:, -1]  # [B, V]
        for prefix, row in zip(prefixes, logits_to_probs(logits, self.params).double().numpy()):
            self._rows[prefix] = row

    def excludes_tokens(self) -> bool:
        """Whether the processing (top-k / top-p) gave some token probability 0 after some prefix."""
        return any((row == 0).any() for row in self._rows.values())

    def probability(self, sequence: tuple[int, ...]) -> float:
        """Exact probability of any sequence (also below the pruned prefixes)."""
        mass = 1.0
        for i, token in enumerate(sequence):
            if sequence[:i] not in self._rows:
                with single_thread():
                    self._compute_rows([sequence[:i]])
            mass *= self._rows[sequence[:i]][token]
        return mass


@dataclass
class Check:
    pvalue: float
    tv: float
    tv_bound: float
    outside_support: int  # emitted sequences the target gives probability 0
    cells: int  # pooled cells compared

    def __str__(self) -> str:
        return (f"chi2 p={self.pvalue:.3g} (alpha {ALPHA}), TV={self.tv:.4f} (bound {self.tv_bound:.4f}) over "
                f"{self.cells} cells, {self.outside_support} sequences outside the support")


def check_counts(counts: Counter, exact: ExactJoint) -> Check:
    """Compare counts of emitted sequences with the exact joint (see the module docstring)."""
    runs = sum(counts.values())
    outside = sum(c for seq, c in counts.items() if seq not in exact.cells and exact.probability(seq) == 0.0)
    keys = list(exact.cells)
    probs = np.array([exact.cells[k] for k in keys] + [exact.rare_mass])  # last cell: "rare"
    obs = np.array([counts.get(k, 0) for k in keys] + [runs - sum(counts.get(k, 0) for k in keys)], dtype=float)
    obs, probs = _pool(obs, probs, runs)
    pvalue = float(stats.chisquare(obs, probs * obs.sum()).pvalue) if len(obs) > 1 else 1.0
    tv = 0.5 * float(np.abs(obs / runs - probs).sum())
    eps = math.sqrt(2.0 / runs * (math.log(2.0 ** len(obs) - 2.0) - math.log(ALPHA))) if len(obs) > 1 else 0.0
    return Check(pvalue, tv, eps / 2, outside, len(obs))


def _pool(obs: np.ndarray, probs: np.ndarray, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the cells with the smallest expected counts into one until it reaches 5; drop empty-mass cells."""
    keep = probs > 0
    obs, probs = obs[keep], probs[keep] / probs[keep].sum()
    order = np.argsort(probs)
    obs, probs = obs[order], probs[order]
    small = int(np.searchsorted(probs * runs, 5.0))
    while small and small < len(probs) and probs[:small].sum() * runs < 5.0:
        small += 1
    if small:
        obs = np.concatenate([[obs[:small].sum()], obs[small:]])
        probs = np.concatenate([[probs[:small].sum()], probs[small:]])
    return obs, probs


@dataclass
class Decoded:
    counts: Counter  # (t1, ..., t_LENGTH) → runs
    steps: int  # target forwards over all runs (prefills included)
    accepted: int  # draft tokens accepted over all runs


def decode_many(target, drafter, params: SamplingParams, runs: int = RUNS, prompt=PROMPT) -> Decoded:
    """`runs` seeded decodes of LENGTH tokens with one drafter instance (reset per request by the engine)."""
    counts: Counter = Counter()
    steps = accepted = 0
    with single_thread():
        for seed in range(runs):
            result = generate(target, drafter, prompt, GenerationConfig(max_new_tokens=LENGTH, sampling=params,
                                                                        seed=seed, stop_on_eos=False))
            counts[tuple(result.token_ids)] += 1
            steps += result.stats.target_steps
            accepted += sum(result.stats.accepted_per_depth)
    return Decoded(counts, steps, accepted)


def assert_lossless(decoded: Decoded, exact: ExactJoint) -> Check:
    c = check_counts(decoded.counts, exact)
    assert c.outside_support == 0, str(c)
    assert c.pvalue >= ALPHA, str(c)
    assert c.tv < c.tv_bound, str(c)
    return c


def assert_exercised(decoded: Decoded, runs: int = RUNS) -> None:
    """Drafts were accepted at times, and rejected at times so that later steps ran on a rolled-back cache: with
    LENGTH 4 and depth-2 drafts a run takes 2 forwards (prefill + one step, all accepted) to 4 (nothing accepted)."""
    assert decoded.accepted > 0.05 * runs, f"only {decoded.accepted} draft tokens accepted in {runs} runs"
    assert 2 * runs < decoded.steps < 4 * runs, f"{decoded.steps} target forwards in {runs} runs: drafts were " \
                                                "always or never accepted, the test would not exercise the rule"
    assert decoded.steps > 2.3 * runs, "too few runs needed a second step: rollback was hardly exercised"
