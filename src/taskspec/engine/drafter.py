"""The Drafter protocol: what the engine asks of anything that proposes tokens.

Per request the engine calls reset() once after prefill, then alternates propose() (a DraftTree hanging from the
last committed token) and observe() (what was committed). Feature-level drafters set `needs_target_hidden` and
then receive the target's final hidden states of the prompt and of every committed token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .sampling import SamplingParams
from .tree import DraftTree


@dataclass
class DraftContext:
    tokens: list[int]  # committed tokens (prompt + output so far); the last one is the tree's root
    params: SamplingParams  # the request's sampling; a sampled tree must draw from the same processed distribution
    generator: torch.Generator  # the request's seeded generator
    max_depth: int  # deeper nodes could not be emitted (token budget or position limit); the engine prunes them


@runtime_checkable
class Drafter(Protocol):
    name: str
    needs_target_hidden: bool

    def reset(self, prompt_ids: list[int], target_hidden: torch.Tensor | None = None) -> None:
        """Start a request. target_hidden: [len(prompt_ids) - 1, hidden] (the prompt minus its last token)."""

    def propose(self, context: DraftContext) -> DraftTree:
        """Return the draft tree to verify (DraftTree.empty() for plain decoding)."""

    def observe(self, committed: list[int], target_hidden: torch.Tensor | None = None) -> None:
        """Tokens committed by the last step (accepted + bonus). target_hidden: [len(committed), hidden] for the
        root and accepted rows, i.e. the tokens whose features are now known (the bonus token's are not yet)."""


class NoDrafter:
    """Plain autoregressive decoding through the same engine: the denominator of every speedup."""

    name = "none"
    needs_target_hidden = False

    def reset(self, prompt_ids, target_hidden=None) -> None:
        pass

    def propose(self, context: DraftContext) -> DraftTree:
        return DraftTree.empty()

    def observe(self, committed, target_hidden=None) -> None:
        pass
