"""verify_tree is lossless: what it emits has exactly the target's processed distribution.

Method (DESIGN.md, "Losslessness is the product's promise"): seeded Monte Carlo on a tiny vocabulary (V = 6).
Each run draws a draft tree from a toy drafter (the draft tokens are really drawn from the distributions written into
the tree, with their own generator), asks verify_tree to accept/reject it against a toy target, and records the first
two emitted tokens. The empirical distributions of

  * token 1 (the depth-1 token: tokens[accepted[0]] if anything was accepted, else the bonus), and
  * the pair (token 1, token 2)

are compared with the exact processed target distributions P(x1) = logits_to_probs(target(()))[x1] and
P(x1, x2) = P(x1) · logits_to_probs(target((x1,)))[x2] by

  * a support check: no token outside the processed support is ever emitted;
  * a chi-square goodness-of-fit test (scipy.stats.chisquare; cells with expected count < 5 pooled), failing at
    p < ALPHA = 1e-4;
  * a total-variation bound: TV(empirical, exact) must stay below the threshold t with
    P(TV >= t) <= ALPHA under the null, from the L1 deviation inequality of Weissman et al. (2003):
    P(||p_hat - p||_1 >= eps) <= (2^k - 2) exp(-N eps^2 / 2), k = support size, so t = eps / 2.

False-failure rate: the seeds are fixed, so each test is deterministic. For an arbitrary seed, a correct verifier
fails one test with probability <= 4 · 1e-4 (union bound over the 2 chi-square tests and the 2 TV bounds; the
chi-square p-value is the usual asymptotic one, accurate with every pooled cell >= 5), i.e. <= ~1e-2 over the whole
file. Power: the negative controls at the bottom run deliberately wrong verifiers through the same check and require
a chi-square p-value below 1e-12: wrong chain rules, and wrong tree rules on the very trees and seeds the tree tests
pass with (no residual update between sibling children; a resampled bonus in deterministic trees).

Case 4 proposes a child whose own draft_probs row gives it probability 0 (it cannot have been drawn from that row),
both outside the target's top-k / top-p support and inside it: it must be skipped, neither accepted nor subtracted
from the residual.

If token 1 was the bonus, token 2 belongs to the *next* decoding step, which starts afresh from prefix (x1,) and
(by the token-1 property, checked here for prefix ()) emits a token distributed as the target's processed row at
(x1,), with randomness independent of this step. The harness therefore draws it directly from that exact row.
Token 2 is verify_tree's own output whenever token 1 was an accepted draft, which is where the depth-2 logic
(acceptance below an accepted node, the residual bonus at that node) is exercised.

Each Monte Carlo test also asserts that acceptance was non-trivial (some but not all runs accept a draft, and
depth-2 trees sometimes accept two drafts), so no test can pass vacuously.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
from scipy import stats

from taskspec.engine.sampling import SamplingParams, logits_to_probs, sample
from taskspec.engine.tree import DraftTree
from taskspec.engine.verify import VerifyResult, verify_tree

V = 6
ALPHA = 1e-4  # per statistical check
N_CHAIN = 8_000  # verify_tree costs ~0.15-0.45 ms per call in Python: these keep each test at ~1-2.5 s
N_TREE = 5_000
N_WRONG = 2_000  # negative controls: their rules are off by far more than the correct rules' sampling noise


# ---- toy language models -------------------------------------------------------------------------------------------
class ToyLM:
    """A deterministic 'model': logits for the next token given a prefix of token ids (fixed pseudo-random)."""

    def __init__(self, seed: int, scale: float) -> None:
        self.seed, self.scale = seed, scale
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    def logits(self, prefix: tuple[int, ...]) -> torch.Tensor:
        if prefix not in self._cache:
            key = self.seed
            for t in prefix:
                key = key * (V + 1) + t + 1
            gen = torch.Generator().manual_seed(key)
            self._cache[prefix] = torch.randn(V, generator=gen) * self.scale
        return self._cache[prefix]

    def probs(self, prefix: tuple[int, ...], params: SamplingParams) -> torch.Tensor:
        return logits_to_probs(self.logits(prefix), params)


TARGET = ToyLM(seed=1234, scale=1.5)
DRAFTER = ToyLM(seed=9876, scale=1.5)

# Processing of the target (what must be preserved) and of the drafter (what the drafts are drawn from).
T1 = SamplingParams(1.0)
TOPK = SamplingParams(0.8, top_k=3)
TOPP = SamplingParams(1.2, top_p=0.7)
DRAFT_FULL = SamplingParams(1.0)
DRAFT_TOPK = SamplingParams(1.0, top_k=4)  # the drafter's own filter: q has zeros where p may not
CONFIGS = {
    "t1": (T1, DRAFT_FULL),
    "topk": (TOPK, DRAFT_TOPK),
    "topp": (TOPP, DRAFT_FULL),
}


def exact_first(params: SamplingParams) -> np.ndarray:
    """[V] exact processed target distribution of token 1."""
    return TARGET.probs((), params).double().numpy()


def exact_joint(params: SamplingParams) -> np.ndarray:
    """[V, V] exact distribution of (token 1, token 2)."""
    p1 = exact_first(params)
    return np.stack([p1[a] * TARGET.probs((a,), params).double().numpy() for a in range(V)])


def target_logits_for(tree: DraftTree) -> torch.Tensor:
    """[n+1, V]: row 0 = target at the root (prefix ()), row i+1 = target after the path to node i."""
    rows = [TARGET.logits(())]
    for i in range(len(tree)):
        rows.append(TARGET.logits(tuple(tree.tokens[j] for j in tree.path_to(i))))
    return torch.stack(rows)


# ---- drafting: real draws from the distributions written into the tree ---------------------------------------------
def draw(p, rng: random.Random) -> int:
    """One token from the weights p (non-negative, any scale) by inverse CDF; never a zero-probability token."""
    u = rng.random() * sum(p)
    acc, last = 0.0, -1
    for i, w in enumerate(p):
        if w > 0:
            acc += w
            last = i
            if u < acc:
                return i
    return last  # u landed on the rounding gap at the top end


def without(q: torch.Tensor, tokens) -> torch.Tensor:
    """q with `tokens` zeroed and renormalised (the distribution of the next draw without replacement)."""
    q = q.clone()
    q[list(tokens)] = 0.0
    return q / q.sum()


class Drafter:
    """Draws the draft tokens of one run (pure Python, own generator) and returns (tree, target_logits).

    The tree, with its draft_probs, and the target logits are deterministic functions of the drawn tokens, so they
    are built once per outcome and cached; that keeps the harness cost far below verify_tree's.
    """

    def __init__(self, qparams: SamplingParams) -> None:
        self.qparams = qparams
        self._q: dict[tuple[int, ...], torch.Tensor] = {}
        self._qlist: dict[tuple[int, ...], list[float]] = {}
        self._cache: dict[tuple[int, ...], tuple[DraftTree, torch.Tensor]] = {}

    def q(self, prefix: tuple[int, ...]) -> torch.Tensor:
        """The drafter's processed distribution after `prefix` (float32, exactly what goes into draft_probs)."""
        if prefix not in self._q:
            self._q[prefix] = DRAFTER.probs(prefix, self.qparams)
        return self._q[prefix]

    def qlist(self, prefix: tuple[int, ...]) -> list[float]:
        if prefix not in self._qlist:
            self._qlist[prefix] = self.q(prefix).tolist()
        return self._qlist[prefix]

    def tree_for(self, tokens: tuple[int, ...]) -> tuple[DraftTree, torch.Tensor]:
        if tokens not in self._cache:
            tree = self.make(tokens)
            self._cache[tokens] = (tree, target_logits_for(tree))
        return self._cache[tokens]

    def make(self, tokens: tuple[int, ...]) -> DraftTree:
        raise NotImplementedError

    def __call__(self, rng: random.Random) -> tuple[DraftTree, torch.Tensor]:
        raise NotImplementedError


class SampledChain(Drafter):
    """x1 ~ q(()), x2 ~ q((x1,)): a chain of depth 2 whose second draft depends on the first."""

    def __call__(self, rng):
        x1 = draw(self.qlist(()), rng)
        x2 = draw(self.qlist((x1,)), rng)
        return self.tree_for((x1, x2))

    def make(self, tokens):
        x1, _ = tokens
        return DraftTree.chain(tokens, draft_probs=torch.stack([self.q(()), self.q((x1,))]))


class SampledTree(Drafter):
    """`width` children of the root, each with `width2` children of its own (node order: the root's children, then
    the children of node 0, of node 1, ...). Siblings are drawn i.i.d. from q, or without replacement; then each
    node's draft_probs row is q with its earlier siblings zeroed and renormalised, the distribution it was drawn from.
    """

    def __init__(self, qparams, *, width=3, width2=2, replacement=True) -> None:
        super().__init__(qparams)
        self.width, self.width2, self.replacement = width, width2, replacement
        self._without: dict[tuple, torch.Tensor] = {}

    def siblings(self, prefix, k, rng) -> list[int]:
        q = list(self.qlist(prefix))
        out = []
        for _ in range(k):
            t = draw(q, rng)
            out.append(t)
            if not self.replacement:
                q[t] = 0.0  # draw() renormalises implicitly
        return out

    def __call__(self, rng):
        top = self.siblings((), self.width, rng)
        tokens = list(top)
        for t in top:
            tokens += self.siblings((t,), self.width2, rng)
        return self.tree_for(tuple(tokens))

    def sibling_rows(self, prefix, toks) -> list[torch.Tensor]:
        return [self.row(prefix, tuple(toks[:j])) for j in range(len(toks))]

    def row(self, prefix, earlier: tuple[int, ...]) -> torch.Tensor:
        """draft_probs row of a node after `prefix` whose earlier siblings carry `earlier`."""
        if self.replacement or not earlier:
            return self.q(prefix)
        key = (prefix, earlier)
        if key not in self._without:
            self._without[key] = without(self.q(prefix), earlier)
        return self._without[key]

    def make(self, tokens):
        top = list(tokens[: self.width])
        parents = [-1] * self.width
        rows = self.sibling_rows((), top)
        for i, t in enumerate(top):
            kids = list(tokens[self.width + i * self.width2 : self.width + (i + 1) * self.width2])
            parents += [i] * self.width2
            rows += self.sibling_rows((t,), kids)
        return DraftTree(tokens, tuple(parents), torch.stack(rows))


class FixedTree(Drafter):
    """A deterministic tree (no draft_probs): the same candidates every run."""

    def __init__(self, tokens, parents) -> None:
        super().__init__(DRAFT_FULL)
        self.tree = DraftTree(tuple(tokens), tuple(parents))
        self.logits = target_logits_for(self.tree)

    def __call__(self, rng):
        return self.tree, self.logits


# ---- the Monte Carlo harness and the statistical check -------------------------------------------------------------
Verifier = Callable[[DraftTree, torch.Tensor, SamplingParams, torch.Generator], VerifyResult]


@dataclass
class MCResult:
    n: int
    first: np.ndarray  # [V] counts of token 1
    joint: np.ndarray  # [V, V] counts of (token 1, token 2)
    accepted_len: Counter  # len(accepted) -> runs
    trees: Counter = field(default_factory=Counter)  # tree.tokens -> runs

    @property
    def accept_rate(self) -> float:
        """Fraction of runs that accepted at least one draft."""
        return 1.0 - self.accepted_len[0] / self.n

    def rate_at_least(self, k: int) -> float:
        return sum(c for length, c in self.accepted_len.items() if length >= k) / self.n


def run_mc(drafter: Drafter, params: SamplingParams, *, seed: int, n: int = N_CHAIN, verifier: Verifier = verify_tree):
    rng_draft = random.Random(seed)  # drafting randomness
    rng_next = random.Random(seed + 1)  # the next decoding step (token 2 when token 1 was a bonus)
    gen = torch.Generator().manual_seed(seed + 2)  # verification randomness
    next_rows = [TARGET.probs((a,), params).tolist() for a in range(V)]
    res = MCResult(n, np.zeros(V, np.int64), np.zeros((V, V), np.int64), Counter())
    for _ in range(n):
        tree, logits = drafter(rng_draft)
        out = verifier(tree, logits, params, gen)
        emitted = [tree.tokens[i] for i in out.accepted] + [out.bonus_token]
        if len(emitted) == 1:
            emitted.append(draw(next_rows[emitted[0]], rng_next))
        res.first[emitted[0]] += 1
        res.joint[emitted[0], emitted[1]] += 1
        res.accepted_len[len(out.accepted)] += 1
        res.trees[tree.tokens] += 1
    return res


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Goodness of fit of counts to probs over the support of probs, pooling cells with expected count < 5."""
    counts, probs = counts.ravel(), probs.ravel()
    support = probs > 0
    obs = counts[support].astype(float)
    if obs.sum() == 0:  # everything fell outside the support (reported by Check.outside_support)
        return 0.0
    exp = probs[support] / probs[support].sum() * obs.sum()
    order = np.argsort(exp)
    obs, exp = obs[order], exp[order]
    small = int(np.searchsorted(exp, 5.0))  # cells [0, small) have expected < 5
    if small:
        # pool the small cells; if the pool is still < 5, absorb the next smallest cells into it
        while small < len(exp) and exp[:small].sum() < 5.0:
            small += 1
        obs = np.concatenate([[obs[:small].sum()], obs[small:]])
        exp = np.concatenate([[exp[:small].sum()], exp[small:]])
    if len(exp) < 2:
        return 1.0
    return float(stats.chisquare(obs, exp).pvalue)


def tv_distance(counts: np.ndarray, probs: np.ndarray) -> float:
    return 0.5 * float(np.abs(counts.ravel() / counts.sum() - probs.ravel()).sum())


def tv_threshold(n: int, k: int, alpha: float = ALPHA) -> float:
    """t such that P(TV(empirical, p) >= t) <= alpha for n samples of a k-outcome p (Weissman et al. 2003)."""
    if k < 2:
        return 0.0
    eps = math.sqrt(2.0 / n * (math.log(2.0**k - 2.0) - math.log(alpha)))
    return eps / 2.0


@dataclass
class Check:
    name: str
    pvalue: float
    tv: float
    tv_bound: float
    outside_support: int

    def __str__(self) -> str:
        return (
            f"{self.name}: chi2 p={self.pvalue:.3g} (alpha {ALPHA}), TV={self.tv:.4f} (bound {self.tv_bound:.4f}), "
            f"{self.outside_support} draws outside the support"
        )


def check(name: str, counts: np.ndarray, probs: np.ndarray) -> Check:
    k = int((probs > 0).sum())
    return Check(
        name,
        chi_square_pvalue(counts, probs),
        tv_distance(counts, probs),
        tv_threshold(int(counts.sum()), k),
        int(counts.ravel()[probs.ravel() <= 0].sum()),
    )


def distribution_checks(res: MCResult, params: SamplingParams) -> list[Check]:
    return [check("token 1", res.first, exact_first(params)), check("tokens 1-2", res.joint, exact_joint(params))]


def assert_lossless(res: MCResult, params: SamplingParams) -> None:
    for c in distribution_checks(res, params):
        assert c.outside_support == 0, str(c)
        assert c.pvalue >= ALPHA, str(c)
        assert c.tv < c.tv_bound, str(c)


def assert_nontrivial(res: MCResult, *, depth2: bool) -> None:
    """Acceptance must be neither never nor always, and a depth-2 tree must sometimes accept two drafts."""
    assert 0.05 <= res.accept_rate <= 0.95, f"acceptance rate {res.accept_rate:.3f}: {dict(res.accepted_len)}"
    if depth2:
        assert res.rate_at_least(2) >= 0.02, f"two drafts accepted in {res.rate_at_least(2):.3f} of runs"
        assert res.rate_at_least(2) < 1.0


def assert_filter_is_active(params: SamplingParams) -> None:
    """For top-k/top-p cases, the processed target rows really do exclude tokens."""
    if params.top_k or params.top_p < 1.0:
        assert (exact_first(params) == 0).any()
        assert all((TARGET.probs((a,), params) == 0).any() for a in range(V))


def assert_valid_path(tree: DraftTree, out: VerifyResult) -> None:
    parent = -1
    for node in out.accepted:
        assert tree.parents[node] == parent
        parent = node
    assert 0 <= out.bonus_token < V


# ---- case 1: sampled chain of depth 2 ------------------------------------------------------------------------------
@pytest.mark.parametrize("config", list(CONFIGS))
def test_sampled_chain_depth2_is_lossless(config):
    params, qparams = CONFIGS[config]
    assert_filter_is_active(params)
    res = run_mc(SampledChain(qparams), params, seed=101)
    assert_nontrivial(res, depth2=True)
    assert_lossless(res, params)


# ---- case 2: sampled trees, several children per node, siblings with or without replacement -----------------------
@pytest.mark.parametrize("replacement", [True, False], ids=["iid-siblings", "without-replacement"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_sampled_tree_is_lossless(config, replacement):
    params, qparams = CONFIGS[config]
    drafter = SampledTree(qparams, width=3, width2=2, replacement=replacement)
    res = run_mc(drafter, params, seed=202 + replacement, n=N_TREE)
    assert_nontrivial(res, depth2=True)
    if replacement:  # i.i.d. siblings repeat tokens: duplicate candidates under one parent were really exercised
        assert sum(c for toks, c in res.trees.items() if len(set(toks[:3])) < 3) > N_TREE // 10
    assert_lossless(res, params)


# ---- case 3: deterministic trees (top-k candidates, duplicates), sample-and-descend ----------------------------------
def deterministic_tree(params: SamplingParams) -> FixedTree:
    """Root children: the target's two most likely tokens plus a duplicate of the first; each of the first two
    gets the two most likely continuations as children. Duplicates must not change the distribution."""
    first = np.argsort(-exact_first(params))[:2].tolist()
    tokens, parents = [first[0], first[1], first[0]], [-1, -1, -1]
    for node, tok in enumerate(first):
        nxt = np.argsort(-TARGET.probs((tok,), params).numpy())[:2].tolist()
        tokens += nxt
        parents += [node, node]
    return FixedTree(tokens, parents)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_deterministic_tree_with_duplicates_is_lossless(config):
    params, _ = CONFIGS[config]
    res = run_mc(deterministic_tree(params), params, seed=303, n=N_CHAIN)
    assert_nontrivial(res, depth2=True)
    assert_lossless(res, params)


def test_greedy_descends_along_the_argmax():
    tree = deterministic_tree(T1).tree
    out = verify_tree(tree, target_logits_for(tree), SamplingParams(0.0))
    expected_first = int(np.argmax(exact_first(T1)))
    assert tree.tokens[out.accepted[0]] == expected_first  # the tree holds the argmax at depth 1 by construction
    assert_valid_path(tree, out)
    path = tuple(tree.tokens[i] for i in out.accepted)
    assert out.bonus_token == int(TARGET.logits(path).argmax())


# ---- case 4: a child that cannot have been drawn from its draft_probs row (draft probability 0) --------------------
class ImpossibleChild(Drafter):
    """Root children: `bad`, whose draft_probs row gives it probability 0 (a drafter whose rows disagree with its
    draws, or a token pasted into a sampled tree), then x1 really drawn from that row; x1 has a sampled child x2.
    The verifier must neither trust `bad` nor let it change the residual: the output stays the target's."""

    def __init__(self, qparams: SamplingParams, bad: int) -> None:
        super().__init__(qparams)
        self.bad = bad
        self.q_root = without(self.q(()), [bad])  # [V], q(bad) = 0
        self.q_root_list = self.q_root.tolist()

    def __call__(self, rng):
        x1 = draw(self.q_root_list, rng)
        x2 = draw(self.qlist((x1,)), rng)
        return self.tree_for((self.bad, x1, x2))

    def make(self, tokens):
        _, x1, _ = tokens
        return DraftTree(tokens, (-1, -1, 1), torch.stack([self.q_root, self.q_root, self.q((x1,))]))


@pytest.mark.parametrize("config, where", [("topk", "outside"), ("topp", "outside"), ("t1", "inside")])
def test_child_with_zero_draft_probability_is_skipped(config, where):
    """`bad` outside the target's top-k / top-p support must never be emitted; inside it, it must not be emitted
    more often than the target says (a rule that accepts every q = 0 child emits it every time)."""
    params, qparams = CONFIGS[config]
    p1 = exact_first(params)
    bad = int(np.flatnonzero(p1 == 0)[0]) if where == "outside" else int(np.argmin(p1))
    assert (p1[bad] == 0) == (where == "outside")
    res = run_mc(ImpossibleChild(qparams, bad), params, seed=505)
    assert_lossless(res, params)
    assert_nontrivial(res, depth2=True)  # x1 and x2 were accepted at times: the real draws were exercised


def test_zero_probability_child_outside_the_target_support_is_never_accepted():
    params = TOPK
    bad = int(np.flatnonzero(exact_first(params) == 0)[0])
    q = torch.full((V,), 1.0 / (V - 1))
    q[bad] = 0.0  # the drafter claims it never proposes `bad`, yet the tree carries it
    tree = DraftTree.chain([bad], draft_probs=q[None])
    logits = target_logits_for(tree)
    gen = torch.Generator().manual_seed(7)
    outs = [verify_tree(tree, logits, params, gen) for _ in range(300)]
    assert all(out.accepted == () for out in outs)
    assert all(exact_first(params)[out.bonus_token] > 0 for out in outs)


# ---- negative controls: the same check catches wrong verifiers (so the tests above can fail) ----------------------
def resample_from_target_on_rejection(tree, logits, params, gen):
    """WRONG: after a rejected sampled draft, draws the bonus from the target instead of the residual."""
    out = verify_tree(tree, logits, params, gen)
    if out.accepted:
        return out
    return VerifyResult((), sample(logits_to_probs(logits[0], params), gen))


def accept_first_child_always(tree, logits, params, gen):
    """WRONG: trusts the drafter for the first token."""
    first = tree.children[0][0]
    return VerifyResult((first,), sample(logits_to_probs(logits[first + 1], params), gen))


@pytest.mark.parametrize("wrong", [resample_from_target_on_rejection, accept_first_child_always])
def test_check_detects_wrong_verifiers(wrong):
    params, qparams = CONFIGS["t1"]
    res = run_mc(SampledChain(qparams), params, seed=404, n=N_CHAIN, verifier=wrong)
    worst = min(c.pvalue for c in distribution_checks(res, params))
    assert worst < 1e-12, [str(c) for c in distribution_checks(res, params)]


# ---- negative controls for trees: wrong sibling and bonus rules are caught by the tree tests' own check ------------
def _residual(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    residual = (target_probs - draft_probs).clamp_min(0.0)
    return residual / residual.sum()


def no_residual_between_siblings(tree, logits, params, gen):
    """WRONG: recursive rejection sampling that tests every sibling against the node's unchanged target distribution
    and forms the residual only once, from the last rejected child, for the bonus. Exact for a chain (one child per
    node), wrong as soon as a node has several sampled children."""
    accepted, row = [], 0
    while True:
        target_probs = logits_to_probs(logits[row], params)  # [V], never updated between siblings
        rejected_q = None
        for child in tree.children[row]:
            q, token = tree.draft_probs[child].float(), tree.tokens[child]
            if float(torch.rand((), generator=gen)) * float(q[token]) < float(target_probs[token]):
                break
            rejected_q = q
        else:
            bonus_probs = target_probs if rejected_q is None else _residual(target_probs, rejected_q)
            return VerifyResult(tuple(accepted), sample(bonus_probs, gen))
        accepted.append(child)
        row = child + 1


def resample_bonus_on_miss(tree, logits, params, gen):
    """WRONG: the deterministic-draft rule, but when the sampled token matches no child it draws the bonus afresh
    instead of emitting the token it sampled (so candidates are emitted too often)."""
    out = verify_tree(tree, logits, params, gen)
    row = out.accepted[-1] + 1 if out.accepted else 0
    if not tree.children[row] or out.bonus_token in {tree.tokens[c] for c in tree.children[row]}:
        return out
    return VerifyResult(out.accepted, sample(logits_to_probs(logits[row], params), gen))


@pytest.mark.parametrize("replacement", [True, False], ids=["iid-siblings", "without-replacement"])
def test_tree_check_detects_missing_sibling_residual(replacement):
    """The same drafter, seed and check as test_sampled_tree_is_lossless[t1-...], which the real rule passes (fewer
    runs: the wrong rule is off by a total variation of ~0.2)."""
    params, qparams = CONFIGS["t1"]
    drafter = SampledTree(qparams, width=3, width2=2, replacement=replacement)
    res = run_mc(drafter, params, seed=202 + replacement, n=N_WRONG, verifier=no_residual_between_siblings)
    assert_nontrivial(res, depth2=True)
    worst = min(c.pvalue for c in distribution_checks(res, params))
    assert worst < 1e-12, [str(c) for c in distribution_checks(res, params)]


def test_tree_check_detects_resampled_bonus_in_deterministic_trees():
    """The same tree, seed and check as test_deterministic_tree_with_duplicates_is_lossless[t1], which the real
    rule passes (fewer runs: the wrong rule is off by a total variation of ~0.25)."""
    params, _ = CONFIGS["t1"]
    res = run_mc(deterministic_tree(params), params, seed=303, n=N_WRONG, verifier=resample_bonus_on_miss)
    worst = min(c.pvalue for c in distribution_checks(res, params))
    assert worst < 1e-12, [str(c) for c in distribution_checks(res, params)]
