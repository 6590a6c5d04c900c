"""DraftTree structure invariants and the logits → probabilities processing in sampling.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskspec.engine.sampling import SamplingParams, logits_to_probs
from taskspec.engine.tree import DraftTree
from taskspec.errors import GenerationInputError


# ---- brute-force references ------------------------------------------------------------------------------------------
def brute_ancestors(parents: tuple[int, ...], node: int) -> set[int]:
    """Node indices of `node`'s strict ancestors (the root excluded), by walking parent links."""
    out = set()
    p = parents[node]
    while p >= 0:
        out.add(p)
        p = parents[p]
    return out


def brute_mask(parents: tuple[int, ...]) -> np.ndarray:
    """[n+1, n+1]: row r attends to column c iff c == r, c == 0 (root), or node c-1 is an ancestor of node r-1."""
    n = len(parents)
    mask = np.zeros((n + 1, n + 1), dtype=bool)
    mask[0, 0] = True
    for i in range(n):
        mask[i + 1, 0] = True
        mask[i + 1, i + 1] = True
        for a in brute_ancestors(parents, i):
            mask[i + 1, a + 1] = True
    return mask


def brute_depth(parents: tuple[int, ...], node: int) -> int:
    return len(brute_ancestors(parents, node)) + 1


def random_parents(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    """A random topologically ordered tree: node i hangs from the root or from any earlier node."""
    return tuple(int(rng.integers(-1, i)) for i in range(n))


# A hand-built tree (tokens are arbitrary):
#   root ─ 0 ─ 1 ─ 2
#        │   └ 3
#        ├ 4 ─ 5
#        └ 6
HAND_PARENTS = (-1, 0, 1, 0, -1, 4, -1)
HAND_TOKENS = (10, 11, 12, 13, 14, 15, 16)

RANDOM_TREES = [random_parents(np.random.default_rng(seed), n) for seed, n in [(0, 1), (1, 5), (2, 12), (3, 30)]]
ALL_PARENTS = [(), (-1,), (-1, 0, 1, 2), (-1, -1, -1), HAND_PARENTS, *RANDOM_TREES]


# ---- constructors ----------------------------------------------------------------------------------------------------
def test_chain_structure():
    tree = DraftTree.chain([5, 3, 3, 9])
    assert tree.tokens == (5, 3, 3, 9)
    assert tree.parents == (-1, 0, 1, 2)
    assert tree.depths == (1, 2, 3, 4)
    assert tree.max_depth == 4
    assert tree.children == ((0,), (1,), (2,), (3,), ())
    assert tree.leaves() == [3]
    assert tree.path_to(3) == [0, 1, 2, 3]
    assert not tree.sampled and tree.draft_probs is None
    assert len(tree) == 4


def test_chain_with_draft_probs_is_sampled():
    q = torch.full((3, 7), 1 / 7)
    tree = DraftTree.chain(torch.tensor([1, 2, 3]), draft_probs=q)
    assert tree.tokens == (1, 2, 3) and all(type(t) is int for t in tree.tokens)
    assert tree.sampled and tree.draft_probs is q


def test_empty_tree():
    for tree in (DraftTree.empty(), DraftTree.chain([]), DraftTree.from_paths([])):
        assert len(tree) == 0
        assert tree.max_depth == 0
        assert tree.children == ((),)
        assert tree.leaves() == []
        assert tree.ancestor_mask().tolist() == [[True]]
        assert tree.position_offsets().tolist() == [0]


def test_from_paths_merges_shared_prefixes_and_keeps_distinct_branches():
    tree = DraftTree.from_paths([[1, 2, 3], [1, 2, 4], [1, 5], [6], [1, 2, 3], [6, 7]])
    # trie: root ─ 1 ─ 2 ─ 3
    #             │   └ 4
    #             └ 5
    #        └ 6 ─ 7
    assert tree.tokens == (1, 2, 3, 4, 5, 6, 7)
    assert tree.parents == (-1, 0, 1, 1, 0, -1, 5)
    assert not tree.sampled
    # every input path is a root-to-node path of the tree, and every leaf ends some input path
    paths = {tuple(tree.tokens[i] for i in tree.path_to(node)) for node in range(len(tree))}
    for p in [(1, 2, 3), (1, 2, 4), (1, 5), (6,), (6, 7)]:
        assert p in paths
    assert sorted(tuple(tree.tokens[i] for i in tree.path_to(leaf)) for leaf in tree.leaves()) == [
        (1, 2, 3),
        (1, 2, 4),
        (1, 5),
        (6, 7),
    ]


def test_from_paths_same_token_under_different_parents_stays_distinct():
    tree = DraftTree.from_paths([[1, 1, 1], [2, 1], [1, 2, 1]])
    assert tree.tokens == (1, 1, 1, 2, 1, 2, 1)
    assert tree.parents == (-1, 0, 1, -1, 3, 0, 5)
    # siblings never share a token in a trie
    for kids in tree.children:
        toks = [tree.tokens[k] for k in kids]
        assert len(toks) == len(set(toks))


def test_from_paths_accepts_tensor_and_numpy_paths():
    tree = DraftTree.from_paths([torch.tensor([4, 5]), np.array([4, 6])])
    assert tree.tokens == (4, 5, 6) and tree.parents == (-1, 0, 0)
    assert all(type(t) is int for t in tree.tokens)


# ---- derived structure -----------------------------------------------------------------------------------------------
def test_hand_built_tree_structure():
    tree = DraftTree(HAND_TOKENS, HAND_PARENTS)
    assert tree.depths == (1, 2, 3, 2, 1, 2, 1)
    assert tree.max_depth == 3
    assert tree.children == ((0, 4, 6), (1, 3), (2,), (), (), (5,), (), ())
    assert tree.leaves() == [2, 3, 5, 6]
    assert tree.path_to(2) == [0, 1, 2]
    assert tree.path_to(3) == [0, 3]
    assert tree.path_to(5) == [4, 5]
    assert tree.path_to(6) == [6]
    assert tree.path_to(-1) == []


@pytest.mark.parametrize("parents", ALL_PARENTS, ids=lambda p: f"n{len(p)}")
def test_derived_structure_matches_brute_force(parents):
    n = len(parents)
    tree = DraftTree(tuple(range(100, 100 + n)), parents)
    # depths
    assert tree.depths == tuple(brute_depth(parents, i) for i in range(n))
    assert tree.max_depth == max(tree.depths, default=0)
    # children: row 0 = root, row i+1 = node i; in node order; every node is exactly one node's child
    assert len(tree.children) == n + 1
    for r, kids in enumerate(tree.children):
        assert list(kids) == [i for i in range(n) if parents[i] == r - 1]
    assert sorted(k for kids in tree.children for k in kids) == list(range(n))
    # leaves
    assert tree.leaves() == [i for i in range(n) if i not in set(parents)]
    # path_to: starts at a root child, follows parent links, ends at the node
    for i in range(n):
        path = tree.path_to(i)
        assert path == sorted(brute_ancestors(parents, i)) + [i]
        assert parents[path[0]] == -1
        assert all(parents[b] == a for a, b in zip(path, path[1:]))
        assert len(path) == tree.depths[i]
    # ancestor mask
    mask = tree.ancestor_mask()
    assert mask.dtype == torch.bool and mask.shape == (n + 1, n + 1)
    assert np.array_equal(mask.numpy(), brute_mask(parents))
    # position offsets = (root 0, depth of each node)
    offsets = tree.position_offsets()
    assert offsets.dtype == torch.long
    assert offsets.tolist() == [0, *tree.depths]


def test_ancestor_mask_hand_built():
    tree = DraftTree(HAND_TOKENS, HAND_PARENTS)
    #            root n0 n1 n2 n3 n4 n5 n6
    expected = [
        [1, 0, 0, 0, 0, 0, 0, 0],  # root
        [1, 1, 0, 0, 0, 0, 0, 0],  # n0
        [1, 1, 1, 0, 0, 0, 0, 0],  # n1
        [1, 1, 1, 1, 0, 0, 0, 0],  # n2
        [1, 1, 0, 0, 1, 0, 0, 0],  # n3
        [1, 0, 0, 0, 0, 1, 0, 0],  # n4
        [1, 0, 0, 0, 0, 1, 1, 0],  # n5
        [1, 0, 0, 0, 0, 0, 0, 1],  # n6
    ]
    assert tree.ancestor_mask().int().tolist() == expected
    assert tree.position_offsets().tolist() == [0, 1, 2, 3, 2, 1, 2, 1]


def test_ancestor_mask_is_causal_and_lower_triangular():
    for parents in ALL_PARENTS:
        mask = DraftTree(tuple(range(len(parents))), parents).ancestor_mask()
        assert torch.equal(mask, mask.tril())  # topological order: nobody attends to a later row
        assert bool(mask.diagonal().all()) and bool(mask[:, 0].all())
        # row sums are depth + 1 (itself, its ancestors, the root)
        assert mask.sum(1).tolist() == [1, *(d + 1 for d in DraftTree(tuple(range(len(parents))), parents).depths)]


# ---- validation ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tokens, parents",
    [
        ((1, 2), (1, -1)),  # child before its parent
        ((1, 2), (-1, 1)),  # parent == own index
        ((1, 2, 3), (-1, 0, 5)),  # parent beyond the end
        ((1,), (0,)),  # the first node cannot have a node parent
        ((1, 2), (-1, -2)),  # below -1
        ((1, 2, 3), (-1, 0)),  # length mismatch
        ((1,), (-1, 0)),  # length mismatch the other way
    ],
)
def test_invalid_parents_raise(tokens, parents):
    with pytest.raises(ValueError):
        DraftTree(tokens, parents)


def test_draft_probs_row_count_must_match():
    with pytest.raises(ValueError):
        DraftTree((1, 2), (-1, 0), torch.full((3, 4), 0.25))
    with pytest.raises(ValueError):
        DraftTree.chain([1, 2, 3], draft_probs=torch.full((2, 4), 0.25))
    DraftTree((1, 2), (-1, 0), torch.full((2, 4), 0.25))  # matching rows are fine


# ---- sampling.py: logits_to_probs and SamplingParams -----------------------------------------------------------------
def _random_logits(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3.0


def test_greedy_is_one_hot_argmax():
    logits = _random_logits(0, (4, 3, 11))
    for params in (SamplingParams(), SamplingParams(0.0, top_k=2, top_p=0.5)):  # filters are irrelevant when greedy
        probs = logits_to_probs(logits, params)
        assert probs.dtype == torch.float32 and probs.shape == logits.shape
        expected = torch.nn.functional.one_hot(logits.argmax(-1), 11).float()
        assert torch.equal(probs, expected)
    assert SamplingParams().greedy and not SamplingParams(0.5).greedy


def test_plain_temperature_is_softmax_of_scaled_logits():
    logits = _random_logits(1, (5, 9)).double()
    for t in (0.3, 1.0, 2.5):
        probs = logits_to_probs(logits, SamplingParams(t))
        assert probs.dtype == torch.float32
        torch.testing.assert_close(probs, torch.softmax(logits / t, -1).float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = _random_logits(2, (6, 10))  # continuous: no ties
    probs = logits_to_probs(logits, SamplingParams(0.7, top_k=k))
    kept = probs > 0
    assert kept.sum(-1).tolist() == [k] * 6
    topk = torch.topk(logits, k, -1).indices
    assert torch.equal(kept, torch.zeros_like(kept).scatter(-1, topk, True))
    # renormalised softmax over the kept set
    expected = torch.softmax((logits / 0.7).masked_fill(~kept, float("-inf")), -1)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)


def test_top_k_disabled_or_at_least_vocab_keeps_everything():
    logits = _random_logits(3, (3, 5))
    for k in (0, 5, 50):
        probs = logits_to_probs(logits, SamplingParams(1.0, top_k=k))
        assert bool((probs > 0).all())
        torch.testing.assert_close(probs, torch.softmax(logits, -1))


# Hand-computed top-p example. Probabilities (at temperature 1) by token: [0.1, 0.4, 0.05, 0.3, 0.15]
# sorted: 0.4 (tok 1), 0.3 (tok 3), 0.15 (tok 4), 0.1 (tok 0), 0.05 (tok 2); cumulative 0.4, 0.7, 0.85, 0.95, 1.0.
TOP_P_PROBS = [0.1, 0.4, 0.05, 0.3, 0.15]


@pytest.mark.parametrize(
    "top_p, expected",
    [
        (0.2, {1: 1.0}),  # the first token alone crosses 0.2
        (0.4 - 1e-3, {1: 1.0}),
        (0.5, {1: 0.4 / 0.7, 3: 0.3 / 0.7}),  # 0.4 < 0.5, the token that crosses (0.3) is kept
        (0.69, {1: 0.4 / 0.7, 3: 0.3 / 0.7}),
        (0.71, {1: 0.4 / 0.85, 3: 0.3 / 0.85, 4: 0.15 / 0.85}),
        (0.9, {1: 0.4 / 0.95, 3: 0.3 / 0.95, 4: 0.15 / 0.95, 0: 0.1 / 0.95}),
        (0.96, {1: 0.4, 3: 0.3, 4: 0.15, 0: 0.1, 2: 0.05}),
        (1.0, {1: 0.4, 3: 0.3, 4: 0.15, 0: 0.1, 2: 0.05}),
    ],
)
def test_top_p_keeps_smallest_prefix_reaching_the_mass(top_p, expected):
    logits = torch.tensor([math.log(p) for p in TOP_P_PROBS]) + 0.37  # shift: softmax is invariant
    probs = logits_to_probs(logits, SamplingParams(1.0, top_p=top_p))
    want = torch.tensor([expected.get(i, 0.0) for i in range(5)])
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    assert set(torch.nonzero(probs).flatten().tolist()) == set(expected)


def test_top_p_applies_after_temperature_and_top_k():
    logits = torch.tensor([math.log(p) for p in TOP_P_PROBS])
    # temperature 0.5 squares the probabilities: ∝ [0.01, 0.16, 0.0025, 0.09, 0.0225] (sum 0.285)
    # → [0.0351, 0.5614, 0.0088, 0.3158, 0.0789]; top_p 0.6: 0.5614 < 0.6, crosses with 0.3158 → keep {1, 3}
    probs = logits_to_probs(logits, SamplingParams(0.5, top_p=0.6))
    torch.testing.assert_close(probs, torch.tensor([0.0, 16 / 25, 0.0, 9 / 25, 0.0]), rtol=1e-5, atol=1e-6)
    # top_k 3 first: {1: 0.4, 3: 0.3, 4: 0.15} → renormalised [0.4706, 0.3529, 0.1765]; top_p 0.8: keep {1, 3}
    # (0.4706 + 0.3529 = 0.8235 crosses 0.8); at top_p 0.85 all three (mass before tok 4 is 0.8235 < 0.85)
    probs = logits_to_probs(logits, SamplingParams(1.0, top_k=3, top_p=0.8))
    torch.testing.assert_close(probs, torch.tensor([0.0, 4 / 7, 0.0, 3 / 7, 0.0]), rtol=1e-5, atol=1e-6)
    probs = logits_to_probs(logits, SamplingParams(1.0, top_k=3, top_p=0.85))
    torch.testing.assert_close(probs, torch.tensor([0.0, 0.4, 0.0, 0.3, 0.15]) / 0.85, rtol=1e-5, atol=1e-6)


def test_top_p_row_by_row_matches_brute_force():
    logits = _random_logits(4, (20, 8))
    top_p = 0.8
    probs = logits_to_probs(logits, SamplingParams(1.0, top_p=top_p))
    full = torch.softmax(logits.double(), -1)
    for r in range(20):
        order = sorted(range(8), key=lambda i: -float(full[r, i]))
        keep, mass = [], 0.0
        for i in order:
            keep.append(i)
            mass += float(full[r, i])
            if mass >= top_p:
                break
        assert set(torch.nonzero(probs[r]).flatten().tolist()) == set(keep)
        expected = torch.zeros(8, dtype=torch.float64)
        expected[keep] = full[r, keep] / full[r, keep].sum()
        torch.testing.assert_close(probs[r], expected.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(),
        SamplingParams(1.0),
        SamplingParams(0.3),
        SamplingParams(2.0, top_k=4),
        SamplingParams(1.0, top_p=0.5),
        SamplingParams(0.8, top_k=6, top_p=0.9),
        SamplingParams(1.0, top_k=1),
    ],
)
def test_rows_sum_to_one_and_are_non_negative(params):
    logits = _random_logits(5, (2, 7, 13))
    probs = logits_to_probs(logits, params)
    assert probs.shape == logits.shape and probs.dtype == torch.float32
    assert bool((probs >= 0).all())
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 7), rtol=0, atol=1e-5)
    # the argmax always survives processing
    assert bool((probs.gather(-1, logits.argmax(-1, keepdim=True)) > 0).all())


def test_low_precision_logits_give_float32():
    logits = _random_logits(6, (3, 9)).to(torch.bfloat16)
    probs = logits_to_probs(logits, SamplingParams(1.0, top_k=4))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(3), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=-0.1),
        dict(temperature=-1e-9),
        dict(temperature=float("nan")),
        dict(temperature=1.0, top_k=-1),
        dict(temperature=1.0, top_p=0.0),
        dict(temperature=1.0, top_p=-0.5),
        dict(temperature=1.0, top_p=1.0 + 1e-9),
        dict(temperature=1.0, top_p=2.0),
        dict(temperature=1.0, top_p=float("nan")),
    ],
)
def test_sampling_params_rejects_bad_values(kwargs):
    with pytest.raises(GenerationInputError):
        SamplingParams(**kwargs)
    with pytest.raises(ValueError):  # GenerationInputError is a ValueError
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(temperature=0.0), dict(temperature=1e-6, top_k=0, top_p=1.0), dict(temperature=5.0, top_k=1, top_p=1e-6)],
)
def test_sampling_params_accepts_boundary_values(kwargs):
    SamplingParams(**kwargs)
