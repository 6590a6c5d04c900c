"""Lossless acceptance of a draft tree against the target's logits. Pure tensor code: no model calls.

Three rules, chosen by the request and the tree:
- greedy (temperature 0): descend into the child whose token is the target's argmax; emit the argmax as bonus.
- deterministic drafts (tree.draft_probs is None) at temperature > 0: sample a token from the target distribution
  at the node; descend if a child carries it, else emit it as the bonus. Exact for any fixed candidate set,
  duplicates included.
- sampled drafts (tree.draft_probs given): recursive rejection sampling. Child c of a node, drawn from q_c, is
  accepted with probability min(1, p(x)/q_c(x)); on rejection p becomes normalise(max(0, p - q_c)) and the next
  sibling is tried; if every child is rejected the bonus is drawn from the final residual. Each round is an exact
  speculative-sampling step for the current residual, so the emitted token has the target distribution whether
  siblings were drawn independently (q_c = q) or without replacement (q_c = q with earlier siblings removed).
  A child whose own q_c gives its token probability 0 cannot have been drawn from q_c: it is skipped (neither
  accepted nor subtracted from the residual), so what is emitted stays the target's whatever such a child carries,
  even a token outside the target's top-k / top-p support.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import SamplingParams, logits_to_probs, sample
from .tree import DraftTree


@dataclass(frozen=True)
class VerifyResult:
    accepted: tuple[int, ...]  # node indices of the accepted path, root's child first
    bonus_token: int  # the token the target emits after the accepted path (recovered token if a draft was rejected)


def verify_tree(
    tree: DraftTree,
    target_logits: torch.Tensor,  # [n+1, vocab]: row 0 = root, row i+1 = node i
    params: SamplingParams,
    generator: torch.Generator | None = None,
) -> VerifyResult:
    """Accept the longest path the lossless rule allows, then emit one bonus token."""
    if target_logits.shape[0] != len(tree) + 1:
        raise ValueError(f"verify_tree: {target_logits.shape[0]} logit rows for a tree of {len(tree)} nodes (+ root)")
    if params.greedy:
        return _verify_greedy(tree, target_logits)
    if tree.sampled:
        return _verify_sampled(tree, target_logits, params, generator)
    return _verify_deterministic(tree, target_logits, params, generator)


def _verify_greedy(tree: DraftTree, target_logits: torch.Tensor) -> VerifyResult:
    best = target_logits.argmax(-1).tolist()  # [n+1]
    accepted: list[int] = []
    row = 0
    while True:
        match = _child_with_token(tree, row, best[row])
        if match is None:
            return VerifyResult(tuple(accepted), best[row])
        accepted.append(match)
        row = match + 1


def _verify_deterministic(
    tree: DraftTree, target_logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> VerifyResult:
    accepted: list[int] = []
    row = 0
    while True:
        token = sample(logits_to_probs(target_logits[row], params), generator)
        match = _child_with_token(tree, row, token)
        if match is None:
            return VerifyResult(tuple(accepted), token)
        accepted.append(match)
        row = match + 1


def _verify_sampled(
    tree: DraftTree, target_logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> VerifyResult:
    draft_probs = tree.draft_probs.float()  # [n, vocab]
    accepted: list[int] = []
    row = 0
    while True:
        target_probs = logits_to_probs(target_logits[row], params)  # [vocab]
        next_row = None
        for child in tree.children[row]:
            token = tree.tokens[child]
            q = draft_probs[child]
            p_tok, q_tok = float(target_probs[token]), float(q[token])
            if q_tok <= 0.0:  # not a draw from q: no test of it is exact, so skip it and leave the residual as is
                continue
            u = float(torch.rand((), generator=generator))
            if u * q_tok < p_tok:  # accept with probability min(1, p/q); never a token the target excludes (p = 0)
                next_row = child + 1
                break
            target_probs = _residual(target_probs, q)
        if next_row is None:
            return VerifyResult(tuple(accepted), sample(target_probs, generator))
        accepted.append(next_row - 1)
        row = next_row


def _residual(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """normalise(max(0, target - draft)); [vocab] → [vocab]. Falls back to target if nothing is left (p == q)."""
    residual = (target_probs - draft_probs).clamp_min_(0.0)
    total = residual.sum()
    return residual / total if total > 0 else target_probs


def _child_with_token(tree: DraftTree, row: int, token: int) -> int | None:
    for child in tree.children[row]:
        if tree.tokens[child] == token:
            return child
    return None
