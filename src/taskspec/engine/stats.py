"""SpecStats: what one request (or a sum of requests) did, in the project's words (see docs/concepts.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _add_lists(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


@dataclass
class SpecStats:
    requests: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    target_steps: int = 0  # target forwards that emitted tokens: one prefill per request + the verification steps
    draft_nodes: int = 0  # draft tokens sent to verification, all steps
    accepted_per_depth: list[int] = field(default_factory=list)  # [d-1]: accepted draft tokens at depth d
    reached_per_depth: list[int] = field(default_factory=list)  # [d-1]: steps whose accepted path had a child at depth d
    time_prefill: float = 0.0  # the prompt's forward, which also emits the first new token
    time_draft: float = 0.0
    time_target: float = 0.0  # verification forwards
    time_accept: float = 0.0  # lossless acceptance (verify.py)
    time_total: float = 0.0

    @property
    def acceptance_length(self) -> float:
        """τ: tokens emitted per target verification step, bonus included (plain decoding: 1)."""
        return self.new_tokens / self.target_steps if self.target_steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.time_total if self.time_total else 0.0

    @property
    def time_overhead(self) -> float:
        """Wall time outside prefill, drafting, target forwards and acceptance: cache compaction, bookkeeping."""
        return max(0.0, self.time_total - self.time_prefill - self.time_draft - self.time_target - self.time_accept)

    @property
    def draft_accuracy(self) -> list[float]:
        """Per depth d: accepted / reached, the chance a depth-d draft is accepted given its parent was."""
        return [a / r if r else 0.0 for a, r in zip(self.accepted_per_depth, self.reached_per_depth)]

    def record_step(self, accepted_depths: int, reached_depths: int) -> None:
        self.target_steps += 1
        self.accepted_per_depth = _add_lists(self.accepted_per_depth, [1] * accepted_depths)
        self.reached_per_depth = _add_lists(self.reached_per_depth, [1] * reached_depths)

    def __add__(self, other: "SpecStats") -> "SpecStats":
        out = SpecStats()
        for name, value in vars(self).items():
            other_value = getattr(other, name)
            setattr(out, name, _add_lists(value, other_value) if isinstance(value, list) else value + other_value)
        return out

    def to_dict(self) -> dict:
        steps = max(self.target_steps - self.requests, 1)  # verification steps (prefills excluded)
        return {
            "requests": self.requests,
            "acceptance_length": round(self.acceptance_length, 4),
            "tokens_per_second": round(self.tokens_per_second, 3),
            "new_tokens": self.new_tokens,
            "prompt_tokens": self.prompt_tokens,
            "target_steps": self.target_steps,
            "draft_nodes": self.draft_nodes,
            "accepted_per_depth": self.accepted_per_depth,
            "reached_per_depth": self.reached_per_depth,
            "draft_accuracy": [round(x, 4) for x in self.draft_accuracy],
            "time": {
                "total": round(self.time_total, 4),
                "prefill": round(self.time_prefill, 4),
                "draft": round(self.time_draft, 4),
                "target": round(self.time_target, 4),
                "accept": round(self.time_accept, 4),
                "overhead": round(self.time_overhead, 4),
                "per_step_ms": {
                    "draft": round(1000 * self.time_draft / steps, 3),
                    "target": round(1000 * self.time_target / steps, 3),
                    "accept_and_overhead": round(1000 * (self.time_accept + self.time_overhead) / steps, 3),
                },
            },
        }
