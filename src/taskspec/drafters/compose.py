"""Composing several specialist drafters into one Drafter (TAPS's inference-time combinations, and routing).

    averaged_drafter(members)        weight-space average of feature-drafter checkpoints (same vocabulary and shape)
    PromptRoutedDrafter              one member per request, picked by a router from the prompt (text or the
                                     target's prefill features)
    ScoreRoutedDrafter               one member per request (or per verification step) with the highest draft
                                     confidence or the lowest draft entropy over its first draft step(s)
    MergedTreeDrafter                every member drafts its own tree; the union under the shared root (duplicate
                                     paths merged) is verified in one target pass

All are lossless because every choice depends on committed tokens only, never on a sampled draft: at T > 0 the
routed drafters sample their drafts after the choice, and merged trees are deterministic (each member drafts its
argmax tree) and verified by the deterministic-draft rule, which is exact for any fixed candidate set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch

from ..engine.drafter import DraftContext, Drafter
from ..engine.tree import DraftTree
from ..errors import DrafterError
from .eagle import EagleDrafter

SCORES = ("confidence", "entropy")


def averaged_drafter(members: Sequence[EagleDrafter], weights: Sequence[float] | None = None,
                     name: str = "averaged") -> EagleDrafter:
    """Checkpoint averaging: one drafter whose weights are the (weighted) mean of the members' weights.

    The members must share architecture and draft vocabulary (specialists fine-tuned from one generic drafter do)."""
    import copy

    if not members:
        raise DrafterError("averaged drafter: no members")
    first = members[0]
    weights = list(weights) if weights is not None else [1.0] * len(members)
    if len(weights) != len(members) or sum(weights) <= 0:
        raise DrafterError(f"averaged drafter: {len(weights)} weights for {len(members)} members")
    states = [m.model.state_dict() for m in members]
    for member, state in zip(members[1:], states[1:]):
        if member.kind != first.kind or not torch.equal(member.vocab.d2t, first.vocab.d2t):
            raise DrafterError(f"averaged drafter: {member.name!r} has another kind or draft vocabulary than "
                               f"{first.name!r}; only drafters fine-tuned from one base can be averaged")
        if state.keys() != states[0].keys() or any(state[k].shape != states[0][k].shape for k in state):
            raise DrafterError(f"averaged drafter: {member.name!r} has other weight shapes than {first.name!r}")
    total = sum(weights)
    mean = {k: sum(w * s[k].float() for w, s in zip(weights, states)) / total for k in states[0]}
    model = copy.deepcopy(first.model)
    model.load_state_dict({k: v.to(states[0][k].dtype) for k, v in mean.items()})
    return EagleDrafter(model, first.vocab, first.target, first.kind, depth=first.depth, top_k=first.top_k,
                        num_nodes=first.num_nodes, name=name)


class _Members:
    """Shared plumbing: forwards reset/observe to the members that are still active."""

    def __init__(self, members: Sequence[Drafter], labels: Sequence[str], name: str):
        if not members:
            raise DrafterError(f"{name}: no member drafters")
        if len(labels) != len(members):
            raise DrafterError(f"{name}: {len(labels)} labels for {len(members)} members")
        self.members, self.labels, self.name = list(members), list(labels), name
        self.needs_target_hidden = any(m.needs_target_hidden for m in self.members)
        self.active: list[int] = list(range(len(self.members)))
        self.choices: Counter = Counter()  # label → how many requests (or steps) it drafted for

    def reset(self, prompt_ids, target_hidden=None) -> None:
        self.active = list(range(len(self.members)))
        for m in self.members:
            m.reset(prompt_ids, target_hidden if m.needs_target_hidden else None)

    def observe(self, committed, target_hidden=None) -> None:
        for i in self.active:
            m = self.members[i]
            m.observe(committed, target_hidden if m.needs_target_hidden else None)


class ScoreRoutedDrafter(_Members):
    """TAPS confidence / entropy routing: every member scores its first `steps` draft steps from the committed
    context; the most confident (or least uncertain) one drafts. per_step=False decides once per request at the first
    verification step and stops feeding the others; per_step=True decides at every step (all members stay fed)."""

    def __init__(self, members: Sequence[EagleDrafter], labels: Sequence[str], score: str = "confidence",
                 steps: int = 1, per_step: bool = False, name: str | None = None):
        if score not in SCORES:
            raise DrafterError(f"score routing {score!r}: expected one of {', '.join(SCORES)}")
        if steps < 1:
            raise DrafterError(f"score routing: steps must be >= 1, got {steps}")
        super().__init__(members, labels, name or (score + (":step" if per_step else "")))
        self.score, self.steps, self.per_step = score, steps, per_step

    def propose(self, context: DraftContext) -> DraftTree:
        if len(self.active) > 1:
            scores = [self.members[i].draft_scores(context, self.steps) for i in self.active]
            # confidence: higher is better; entropy: lower is better. Ties go to the earlier member.
            keys = [s[0] if self.score == "confidence" else -s[1] for s in scores]
            best = self.active[max(range(len(keys)), key=lambda j: (keys[j], -j))]
            self.choices[self.labels[best]] += 1
            if not self.per_step:
                self.active = [best]
        else:
            best = self.active[0]
            if self.per_step:
                self.choices[self.labels[best]] += 1
        return self.members[best].propose(context)


class PromptRoutedDrafter(_Members):
    """One member per request, chosen by `choose(prompt_ids, prompt_hidden) → label` before the first draft.

    prompt_hidden is the target's final hidden states over the whole prompt ([len(prompt), hidden]; the engine hands
    them over in two pieces, at reset and with the first committed token), or None when no member needs them and the
    router reads the text only. Unknown labels fall back to `fallback` (the generic drafter)."""

    def __init__(self, members: Sequence[Drafter], labels: Sequence[str],
                 choose: Callable[[list[int], torch.Tensor | None], str], fallback: str | None = None,
                 wants_hidden: bool = False, name: str = "routed"):
        super().__init__(members, labels, name)
        self.choose, self.fallback = choose, fallback
        self.needs_target_hidden = self.needs_target_hidden or wants_hidden

    def reset(self, prompt_ids, target_hidden=None) -> None:
        self.active = []  # decided at the first propose, when the whole prompt's features are known
        self.prompt_ids, self.pending = list(prompt_ids), []  # pending: (committed, hidden) before the choice
        self.prompt_hidden = target_hidden

    def observe(self, committed, target_hidden=None) -> None:
        if self.active:
            return super().observe(committed, target_hidden)
        self.pending.append((list(committed), target_hidden))

    def propose(self, context: DraftContext) -> DraftTree:
        if not self.active:
            hidden = None
            if self.prompt_hidden is not None:  # the prompt's rows: reset's plus the last prompt token's
                hidden = torch.cat([self.prompt_hidden, self.pending[0][1][:1]]) if self.pending else self.prompt_hidden
            label = self.choose(self.prompt_ids, hidden)
            if label not in self.labels:
                label = self.fallback if self.fallback in self.labels else self.labels[0]
            index = self.labels.index(label)
            self.choices[label] += 1
            chosen = self.members[index]
            chosen.reset(self.prompt_ids, self.prompt_hidden if chosen.needs_target_hidden else None)
            for committed, hidden_rows in self.pending:
                chosen.observe(committed, hidden_rows if chosen.needs_target_hidden else None)
            self.active, self.pending = [index], []
        return self.members[self.active[0]].propose(context)


class MergedTreeDrafter(_Members):
    """Each member drafts its tree; the union of all their root-to-node paths is one deterministic tree.

    Members are switched to deterministic drafting (their argmax chain or dynamic tree at any temperature), so the
    merged tree is verified by the deterministic-draft rule and stays lossless at T > 0."""

    def __init__(self, members: Sequence[EagleDrafter], labels: Sequence[str], name: str = "merged"):
        super().__init__(members, labels, name)
        for m in self.members:
            m.deterministic = True
        self.merged_nodes = 0  # duplicate nodes merged away (for reports and tests)

    def propose(self, context: DraftContext) -> DraftTree:
        trees = [m.propose(context) for m in self.members]
        return merge_trees(trees, self)


def merge_trees(trees: Sequence[DraftTree], stats: MergedTreeDrafter | None = None) -> DraftTree:
    """Union of deterministic trees under one root: every node's path is kept, identical paths become one node."""
    paths = []
    for tree in trees:
        if tree.sampled:
            raise DrafterError("merge_trees: a sampled tree cannot be merged losslessly; draft deterministically")
        paths += [[tree.tokens[n] for n in tree.path_to(leaf)] for leaf in tree.leaves()]
    merged = DraftTree.from_paths(paths)
    if stats is not None:
        stats.merged_nodes += sum(len(t) for t in trees) - len(merged)
    return merged
