"""Logits → probabilities, in one place, used by every drafter and by the verifier.

The distribution the engine preserves is the *processed* target distribution: softmax(logits / temperature)
restricted by top-k and top-p. Temperature 0 means greedy: a one-hot distribution on the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GenerationInputError


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen. temperature 0 = greedy; top_k 0 and top_p 1.0 disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0):
            raise GenerationInputError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise GenerationInputError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise GenerationInputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Processed probabilities, float32.

    logits: [..., vocab] → probs: [..., vocab], each row sums to 1.
    """
    logits = logits.float()
    if params.greedy:
        probs = torch.zeros_like(logits)
        probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        return probs
    scaled = logits / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]  # [..., 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        probs = _top_p_filter(probs, params.top_p)
    return probs


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (the token that crosses it included)."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)  # [..., vocab]
    mass_before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """Draw one token id from a single distribution. probs: [vocab]."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick one token from a row of logits [vocab]: argmax when greedy, else a draw from the processed distribution."""
    if params.greedy:
        return int(logits.argmax().item())
    return sample(logits_to_probs(logits, params), generator)
