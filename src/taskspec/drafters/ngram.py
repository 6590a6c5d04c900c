"""`ngram` drafter (prompt lookup): no weights, proposes what followed earlier occurrences of the current suffix.

For n from max_ngram down to min_ngram, find earlier occurrences of the last n committed tokens in prompt + output;
the tokens that followed them are the drafts. The most recent occurrences come first. With branches = 1 the draft
is a chain; with more, up to `branches` distinct continuations are merged into a small tree (shared prefixes
become shared nodes). Drafts are deterministic, so they are verified by the deterministic-draft rule.
"""

from __future__ import annotations

import numpy as np

from ..engine.drafter import DraftContext
from ..engine.tree import DraftTree
from ..errors import DrafterError


class NgramDrafter:
    needs_target_hidden = False

    def __init__(self, depth: int = 6, max_ngram: int = 3, min_ngram: int = 1, branches: int = 1,
                 max_nodes: int | None = None):
        if not 1 <= min_ngram <= max_ngram:
            raise DrafterError(f"ngram drafter: need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if depth < 1 or branches < 1:
            raise DrafterError(f"ngram drafter: depth and branches must be >= 1, got {depth}, {branches}")
        self.depth, self.max_ngram, self.min_ngram, self.branches = depth, max_ngram, min_ngram, branches
        self.max_nodes = max_nodes or depth * branches
        self.name = "ngram" if branches == 1 else "ngram-tree"

    def reset(self, prompt_ids, target_hidden=None) -> None:
        pass

    def observe(self, committed, target_hidden=None) -> None:
        pass

    def propose(self, context: DraftContext) -> DraftTree:
        depth = min(self.depth, context.max_depth)
        if depth < 1:
            return DraftTree.empty()
        return DraftTree.from_paths(self.continuations(context.tokens, depth))

    def continuations(self, tokens: list[int], depth: int) -> list[list[int]]:
        """Up to `branches` distinct continuations of the longest suffix n-gram that occurred before, newest first."""
        seq = np.asarray(tokens, dtype=np.int64)
        for n in range(min(self.max_ngram, len(seq) - 1), self.min_ngram - 1, -1):
            starts = _occurrences(seq, n)
            if starts.size == 0:
                continue
            paths: list[list[int]] = []
            nodes = 0
            for start in starts[::-1]:  # newest first
                follow = seq[start + n : start + n + depth].tolist()
                if follow and follow not in paths and not any(p[: len(follow)] == follow for p in paths):
                    paths.append(follow)
                    nodes += len(follow)
                    if len(paths) == self.branches or nodes >= self.max_nodes:
                        break
            return paths
        return []


def _occurrences(seq: np.ndarray, n: int) -> np.ndarray:
    """Start indices i < len(seq) - n with seq[i:i+n] == seq[-n:] (the suffix itself excluded)."""
    windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)  # [len - n, n]
    return np.flatnonzero((windows == seq[-n:]).all(axis=1))
