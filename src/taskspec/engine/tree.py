"""DraftTree: the drafter's proposal, verified by the target in one forward pass.

Nodes are indexed 0..n-1 in topological order (a parent always comes before its children). The tree's root is the
last committed token, which is *not* a node: a node with parent -1 hangs from the root. A chain is a tree whose
node i has parent i-1.

For verification the target sees [root, node_0, ..., node_{n-1}]; row r of the derived tensors refers to that
sequence (row 0 = root, row i+1 = node i).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class DraftTree:
    """tokens: node token ids; parents: parent node index or -1 for the root.

    draft_probs: [n, vocab] float, or None. When given, the tree was *sampled*: node i's token was drawn from
    draft_probs[i] (the distribution the drafter sampled it from, given its earlier siblings), and verification uses
    residual rejection sampling. When None, the nodes were chosen deterministically and verification samples the
    target and descends if a child matches.
    """

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    draft_probs: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.parents):
            raise ValueError(f"DraftTree: {len(self.tokens)} tokens but {len(self.parents)} parents")
        for i, p in enumerate(self.parents):
            if not -1 <= p < i:
                raise ValueError(f"DraftTree: node {i} has parent {p}; parents must come before children (or be -1)")
        if self.draft_probs is not None and self.draft_probs.shape[0] != len(self.tokens):
            raise ValueError(f"DraftTree: draft_probs has {self.draft_probs.shape[0]} rows for {len(self.tokens)} nodes")

    # ---- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> "DraftTree":
        return cls((), ())

    @classmethod
    def chain(cls, tokens, draft_probs: torch.Tensor | None = None) -> "DraftTree":
        tokens = tuple(int(t) for t in tokens)
        return cls(tokens, tuple(range(-1, len(tokens) - 1)), draft_probs)

    @classmethod
    def from_paths(cls, paths) -> "DraftTree":
        """A deterministic tree (trie) holding every path; shared prefixes become shared nodes."""
        tokens: list[int] = []
        parents: list[int] = []
        child_of: dict[tuple[int, int], int] = {}
        for path in paths:
            parent = -1
            for tok in path:
                key = (parent, int(tok))
                if key not in child_of:
                    child_of[key] = len(tokens)
                    tokens.append(int(tok))
                    parents.append(parent)
                parent = child_of[key]
        return cls(tuple(tokens), tuple(parents))

    # ---- derived structure --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def sampled(self) -> bool:
        return self.draft_probs is not None

    @cached_property
    def depths(self) -> tuple[int, ...]:
        """Depth of each node: children of the root have depth 1."""
        depths: list[int] = []
        for p in self.parents:
            depths.append(1 if p < 0 else depths[p] + 1)
        return tuple(depths)

    @cached_property
    def max_depth(self) -> int:
        return max(self.depths, default=0)

    @cached_property
    def children(self) -> tuple[tuple[int, ...], ...]:
        """children[r] for r = 0 (root) .. n (node n-1): node indices, in node order."""
        kids: list[list[int]] = [[] for _ in range(len(self) + 1)]
        for i, p in enumerate(self.parents):
            kids[p + 1].append(i)
        return tuple(tuple(k) for k in kids)

    def ancestor_mask(self) -> torch.Tensor:
        """[n+1, n+1] bool: row r may attend to column c iff c is r itself or one of its ancestors (root included)."""
        n = len(self)
        mask = np.eye(n + 1, dtype=bool)
        mask[:, 0] = True
        for i, p in enumerate(self.parents):
            if p >= 0:
                mask[i + 1] |= mask[p + 1]
        return torch.from_numpy(mask)

    def position_offsets(self) -> torch.Tensor:
        """[n+1] long: position of each row relative to the root (root 0, a node its depth)."""
        return torch.tensor((0, *self.depths), dtype=torch.long)

    def path_to(self, node: int) -> list[int]:
        """Node indices from the root's child down to `node`."""
        path = []
        while node >= 0:
            path.append(node)
            node = self.parents[node]
        return path[::-1]

    def leaves(self) -> list[int]:
        return [i for i in range(len(self)) if not self.children[i + 1]]

    def prune(self, max_depth: int) -> "DraftTree":
        """The subtree of nodes at depth <= max_depth (node order and draft_probs rows kept)."""
        if self.max_depth <= max_depth:
            return self
        keep = [i for i, d in enumerate(self.depths) if d <= max_depth]
        new_index = {old: new for new, old in enumerate(keep)}
        parents = tuple(-1 if self.parents[i] < 0 else new_index[self.parents[i]] for i in keep)
        probs = None if self.draft_probs is None else self.draft_probs[keep]
        return DraftTree(tuple(self.tokens[i] for i in keep), parents, probs, self.meta)
