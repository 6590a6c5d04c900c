"""Dynamic draft trees (EAGLE-2): expand the most likely nodes, then keep the best nodes overall.

Each node carries a score, the cumulative draft log-probability of its path. Step 1 takes the root's top_k
children; each later step asks the drafter for the distributions at the `top_k` best nodes of the previous layer
(the frontier) and adds their top_k children. Finally the `num_nodes` best nodes are kept. A child's score never
exceeds its parent's, and ties are broken by node order, so the kept set always includes every kept node's parent.
With top_k = 1 this is a greedy chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..engine.tree import DraftTree


@dataclass
class GrowingTree:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, token: int, parent: int, score: float) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(1 if parent < 0 else self.depths[parent] + 1)
        self.scores.append(score)
        return len(self.tokens) - 1

    def ancestors(self, node: int) -> list[int]:
        """Strict ancestors of `node` (root excluded), nearest first."""
        out = []
        node = self.parents[node]
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out


# expand(frontier, tree) → [len(frontier), vocab] log-probabilities of each frontier node's children
Expand = Callable[[list[int], GrowingTree], torch.Tensor]


def grow_tree(root_logprobs: torch.Tensor, expand: Expand, depth: int, top_k: int, num_nodes: int) -> DraftTree:
    """root_logprobs: [vocab] log-probabilities of the root's children. Returns a deterministic DraftTree."""
    tree = GrowingTree()
    if depth < 1 or num_nodes < 1:
        return DraftTree.empty()
    values, ids = torch.topk(root_logprobs, top_k)
    frontier = [tree.add(t, -1, v) for v, t in zip(values.tolist(), ids.tolist())]
    for _ in range(depth - 1):
        logprobs = expand(frontier, tree)  # [f, vocab]
        values, ids = torch.topk(logprobs, top_k, dim=-1)  # [f, top_k]
        parent_scores = torch.tensor([tree.scores[n] for n in frontier]).unsqueeze(1)
        scores = (parent_scores + values).tolist()
        ids = ids.tolist()
        new_nodes = [tree.add(ids[i][j], parent, scores[i][j])
                     for i, parent in enumerate(frontier) for j in range(top_k)]
        new_nodes.sort(key=lambda n: (-tree.scores[n], n))
        frontier = new_nodes[:top_k]
    return best_subtree(tree, num_nodes)


def best_subtree(tree: GrowingTree, num_nodes: int) -> DraftTree:
    """The num_nodes highest-scoring nodes, re-indexed in their original (topological) order."""
    ranked = sorted(range(len(tree.tokens)), key=lambda n: (-tree.scores[n], n))
    keep = sorted(ranked[:num_nodes])
    new_index = {old: new for new, old in enumerate(keep)}
    parents = tuple(-1 if tree.parents[n] < 0 else new_index[tree.parents[n]] for n in keep)
    return DraftTree(tuple(tree.tokens[n] for n in keep), parents)
