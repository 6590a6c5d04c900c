"""Reduced draft vocabulary: the drafter's head covers only the most frequent target tokens.

A 262k-row head costs as much as a good part of a target step on a CPU; a 32k-row head a fraction of it. Tokens
outside the draft vocabulary are simply never drafted, which stays lossless: verification is always against the
full target distribution. The map is stored as `d2t` (draft id → target id), as in EAGLE-3 and FR-Spec.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import DrafterError


class DraftVocab:
    def __init__(self, d2t: torch.Tensor, target_vocab_size: int):
        d2t = torch.as_tensor(d2t, dtype=torch.long).flatten()  # [draft_vocab]
        if d2t.numel() == 0:
            raise DrafterError("draft vocabulary is empty; expected at least one token id")
        if int(d2t.min()) < 0 or int(d2t.max()) >= target_vocab_size:
            raise DrafterError(f"draft vocabulary maps to ids outside the target vocabulary [0, {target_vocab_size})")
        if torch.unique(d2t).numel() != d2t.numel():
            raise DrafterError("draft vocabulary maps two draft ids to the same target id")
        self.d2t = d2t
        self.target_vocab_size = target_vocab_size
        self.t2d = torch.full((target_vocab_size,), -1, dtype=torch.long)  # [target_vocab]; -1 = not draftable
        self.t2d[d2t] = torch.arange(d2t.numel())

    def __len__(self) -> int:
        return self.d2t.numel()

    @classmethod
    def from_counts(cls, counts: torch.Tensor, size: int, always: Iterable[int] = ()) -> DraftVocab:
        """The `size` most frequent ids of counts [target_vocab] (ties: lower id first), plus the `always` ids
        (e.g. EOS) in place of the least frequent ones. Ordered by target id."""
        counts = torch.as_tensor(counts).flatten().double()
        vocab_size = counts.numel()
        size = min(size, vocab_size)
        always = sorted({int(t) for t in always})
        if len(always) > size:
            raise DrafterError(f"draft vocabulary of {size} cannot hold the {len(always)} required tokens")
        boosted = counts.clone()
        boosted[always] = float("inf")
        order = torch.argsort(-boosted, stable=True)  # stable: equal counts keep id order
        return cls(torch.sort(order[:size]).values, vocab_size)

    @classmethod
    def full(cls, vocab_size: int) -> DraftVocab:
        return cls(torch.arange(vocab_size), vocab_size)

    def to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return self.d2t[draft_ids]

    def to_draft(self, target_ids: torch.Tensor) -> torch.Tensor:
        """Draft ids of target ids; -1 where a target id is not in the draft vocabulary."""
        return self.t2d[target_ids]

    def coverage(self, counts: torch.Tensor) -> float:
        """Share of the token occurrences in counts [target_vocab] that the draft vocabulary can draft."""
        counts = torch.as_tensor(counts).double()
        return float(counts[self.d2t].sum() / counts.sum().clamp_min(1))
