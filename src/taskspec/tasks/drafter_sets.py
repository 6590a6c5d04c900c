"""Drafter sets with their routers: drafters/ sits below tasks/ and cannot load a router itself, so a set loaded
here is handed tasks.routers.load_router for its `routed` strategies. This is `taskspec.load_drafter_set`."""

from __future__ import annotations

from pathlib import Path

from ..drafters.drafter_set import DrafterSet
from ..models.causal_lm import CausalLM
from .routers import load_router


def load_drafter_set(folder: str | Path, target: CausalLM, **options) -> DrafterSet:
    """The drafter set in `folder` (`taskspec build` / `taskspec pipeline`) for `target`, refused for another target;
    `options` (depth, top_k, num_nodes) override the set's drafting defaults. `.compose(strategy)` → a drafter."""
    return DrafterSet.load(folder, target, load_router=load_router, **options)
