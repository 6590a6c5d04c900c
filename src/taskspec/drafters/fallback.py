"""A drafter that asks a cheap drafter first and a second one only when the first has nothing.

Prompt lookup (`ngram`) costs ~0.5 ms and is very good when the text repeats itself; a feature drafter costs
~15 ms per proposal and is better elsewhere. `FallbackDrafter(ngram, hass)` proposes the lookup's draft when its
suffix match is long enough and the feature drafter's otherwise. Each step's tree is verified by its own rule, so
the combination is as lossless as its parts; the choice depends on committed tokens only.
"""

from __future__ import annotations

from ..engine.drafter import DraftContext, Drafter
from ..engine.tree import DraftTree


class FallbackDrafter:
    def __init__(self, first: Drafter, second: Drafter, name: str | None = None):
        self.first, self.second = first, second
        self.needs_target_hidden = first.needs_target_hidden or second.needs_target_hidden
        self.name = name or f"{first.name}+{second.name}"
        self.proposals = [0, 0]  # how often each drafter's tree was used (for reports and tests)

    @property
    def choices(self):
        """The second drafter's routing choices, if it routes (a composed drafter set strategy), for the bench."""
        return getattr(self.second, "choices", None)

    def reset(self, prompt_ids, target_hidden=None) -> None:
        for drafter in (self.first, self.second):
            drafter.reset(prompt_ids, target_hidden if drafter.needs_target_hidden else None)

    def observe(self, committed, target_hidden=None) -> None:
        for drafter in (self.first, self.second):
            drafter.observe(committed, target_hidden if drafter.needs_target_hidden else None)

    def propose(self, context: DraftContext) -> DraftTree:
        tree = self.first.propose(context)
        if len(tree):
            self.proposals[0] += 1
            return tree
        self.proposals[1] += 1
        return self.second.propose(context)
