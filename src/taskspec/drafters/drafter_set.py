"""Drafter sets: a folder of drafters for one target (a generic one, per-task specialists, mixes) plus routers, and
the composition strategies that turn it into one Drafter.

    DIR/drafterset.json        manifest (below); written last by `taskspec build`, atomically
    DIR/taskmap.json           the task map the tasks come from (`taskspec detect`)
    DIR/<member folders>       feature-drafter checkpoints or LoRA adapter folders
    DIR/routers/<kind>.json    fitted routers (tasks/routers.py)

Manifest: {"format", "version", "target": fingerprint, "kind", "tasks": [{"id", "name", "keywords", "examples"}],
"members": {name: relative folder}, "specialists": {family: {task name: member}}, "generic": member,
"routers": {kind: relative file}, "default_router": kind, "options": drafting defaults, "build": provenance}.
Member names: "generic", "head:<task>", "lora:<task>", "mixed-small", "mixed-large". Member folders are relative
to DIR, absolute, or "shipped:<kind>" (the drafter shipped with the package for the target).

Strategies (`compose`; a suffix "@lora" uses the LoRA specialists instead of the separate heads):

    single[:MEMBER]          one member (default: the generic drafter)
    averaged                 weight-space average of the specialists
    routed[:ROUTER]          the specialist of the task a router picks from the prompt (default router: the set's)
    confidence[:step]        TAPS confidence routing per request (":step": re-chosen at every verification step)
    entropy[:step]           the same with the lowest draft entropy
    merged                   every specialist drafts, trees merged: equal verification budget (each gets half)
    merged-double            the same, each specialist with the full budget (twice the nodes; TAPS's setting)
    ngram+STRATEGY           prompt lookup first (when the last 2+ tokens occurred before), the strategy otherwise:
                             what `auto` does for one drafter (drafters/fallback.py), e.g. ngram+routed
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DrafterError
from ..models.causal_lm import CausalLM
from .checkpoint import fingerprint_mismatch, load_drafter

FORMAT = "taskspec-drafter-set"
VERSION = 1
MANIFEST = "drafterset.json"
FAMILIES = ("head", "lora")
STRATEGIES = ("single", "averaged", "routed", "confidence", "entropy", "merged", "merged-double")


@dataclass
class DrafterSet:
    folder: Path
    target: CausalLM
    manifest: dict
    options: dict = field(default_factory=dict)  # drafting options (depth, top_k, num_nodes) for every member

    # ---- loading ----------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, target: CausalLM, **options) -> "DrafterSet":
        """Read DIR/drafterset.json; refuse a set built for another target. Members load lazily."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise DrafterError(f"drafter set {str(folder)!r}: no {MANIFEST}; expected a folder written by "
                               "`taskspec build`")
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} v{VERSION} manifest")
            for key in ("members", "specialists", "generic", "tasks"):
                manifest[key]  # noqa: B018 - presence check
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DrafterError(f"drafter set {str(path)!r}: unreadable manifest ({exc})") from None
        wrong = fingerprint_mismatch(manifest.get("target", {}), target)
        if wrong:
            raise DrafterError(f"drafter set {str(folder)!r} was built for another target "
                               f"({manifest.get('target', {}).get('name', '?')}): " + "; ".join(wrong))
        allowed = {"depth", "top_k", "num_nodes"}
        unknown = set(options) - allowed
        if unknown:
            raise DrafterError(f"drafter set options {sorted(unknown)}: expected some of {sorted(allowed)}")
        return cls(folder, target, manifest, {**manifest.get("options", {}), **options})

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.manifest["tasks"]]

    def member(self, name: str, **overrides):
        """Load one member drafter by name (a fresh instance: members hold per-request state)."""
        members = self.manifest["members"]
        if name not in members:
            raise DrafterError(f"drafter set {str(self.folder)!r} has no member {name!r}; it has: "
                               f"{', '.join(members)}")
        drafter = load_drafter(self._path(members[name]), self.target, **{**self.options, **overrides})
        drafter.name = name
        return drafter

    def specialists(self, family: str = "head") -> dict[str, str]:
        """task name → member name of that family's specialists."""
        found = self.manifest["specialists"].get(family)
        if not found:
            raise DrafterError(f"drafter set {str(self.folder)!r} has no {family} specialists; it has: "
                               f"{', '.join(self.manifest['specialists']) or 'none'}")
        return found

    def router(self, kind: str | None = None):
        routers = self.manifest.get("routers", {})
        kind = kind or self.manifest.get("default_router")
        if kind is None:
            raise DrafterError(f"drafter set {str(self.folder)!r} has no routers; build it with --routers or use "
                               "another strategy (confidence, entropy, merged, ...)")
        if kind not in routers:
            raise DrafterError(f"drafter set {str(self.folder)!r} has no {kind!r} router; it has: "
                               f"{', '.join(routers) or 'none'}")
        from ..tasks.routers import load_router

        return load_router(self._path(routers[kind]), self.target)

    def _path(self, relative: str) -> Path:
        if relative.startswith("shipped:"):  # a drafter shipped with the package, e.g. "shipped:eagle2"
            from .shipped import shipped_drafters

            kind = relative.removeprefix("shipped:")
            shipped = shipped_drafters(self.target)
            if kind not in shipped:
                raise DrafterError(f"drafter set {str(self.folder)!r} uses the shipped {kind} drafter, which this "
                                   f"installation does not have for target {self.target.name!r}")
            return shipped[kind]
        path = Path(relative)
        return path if path.is_absolute() else self.folder / path

    # ---- composition ------------------------------------------------------------------------------------------------
    def compose(self, strategy: str):
        """A Drafter for `strategy` (see the module docstring)."""
        from .compose import MergedTreeDrafter, PromptRoutedDrafter, ScoreRoutedDrafter, averaged_drafter

        name, family = strategy, "head"
        if strategy.startswith("ngram+"):
            from . import build_drafter
            from .fallback import FallbackDrafter

            inner = self.compose(strategy.removeprefix("ngram+"))
            return FallbackDrafter(build_drafter("ngram:min_ngram=2", self.target), inner, name=name)
        if "@" in strategy:
            strategy, _, family = strategy.partition("@")
            if family not in FAMILIES:
                raise DrafterError(f"strategy {name!r}: unknown specialist family {family!r}; expected "
                                   f"{' or '.join(FAMILIES)}")
        kind, _, arg = strategy.partition(":")
        if kind not in STRATEGIES:
            raise DrafterError(f"unknown composition strategy {name!r}; expected one of: single[:MEMBER], averaged, "
                               "routed[:ROUTER], confidence[:step], entropy[:step], merged, merged-double "
                               "(optionally with @lora, and ngram+ in front for prompt lookup first)")
        if kind == "single":
            drafter = self.member(arg or self.manifest["generic"])
            drafter.name = name
            return drafter
        tasks = self.specialists(family)
        labels = list(tasks)
        if kind == "averaged":
            return averaged_drafter([self.member(tasks[t]) for t in labels], name=name)
        if kind in ("confidence", "entropy"):
            if arg not in ("", "step"):
                raise DrafterError(f"strategy {name!r}: expected {kind} or {kind}:step")
            return ScoreRoutedDrafter([self.member(tasks[t]) for t in labels], labels, kind, per_step=arg == "step",
                                      name=name)
        if kind.startswith("merged"):
            budget = self._budget()
            each = budget if kind == "merged-double" else max(1, budget // len(labels))
            members = [self.member(tasks[t], **self._with_budget(each)) for t in labels]
            return MergedTreeDrafter(members, labels, name=name)
        # routed
        router = self.router(arg or None)
        task_of_id = {t["id"]: t["name"] for t in self.manifest["tasks"]}
        wants_hidden = getattr(router, "predict_from_hidden", None) is not None
        tokenizer = self.target.tokenizer

        def choose(prompt_ids, prompt_hidden):
            if wants_hidden and prompt_hidden is not None:
                task, _ = router.predict_from_hidden(prompt_hidden)
            else:
                if tokenizer is None:
                    raise DrafterError(f"strategy {name!r}: router needs text but the target has no tokenizer")
                task, _ = router.predict([tokenizer.decode(prompt_ids, skip_special_tokens=True)])[0]
            return task_of_id.get(int(task), "")

        return PromptRoutedDrafter([self.member(tasks[t]) for t in labels], labels, choose, wants_hidden=wants_hidden,
                                   name=name)

    def _budget(self) -> int:
        """Nodes one drafter verifies per step with the set's options: depth for a chain, num_nodes for a tree."""
        depth, top_k, nodes = (int(self.options.get(k, d)) for k, d in (("depth", 3), ("top_k", 1),
                                                                         ("num_nodes", 8)))
        return min(depth, nodes) if top_k == 1 else nodes

    def _with_budget(self, nodes: int) -> dict:
        top_k = int(self.options.get("top_k", 1))
        if top_k == 1:
            return {"depth": nodes, "num_nodes": nodes}
        return {"num_nodes": nodes}


def load_drafter_set(folder: str | Path, target: CausalLM, **options) -> DrafterSet:
    """The drafter set in `folder` (`taskspec build` / `taskspec pipeline`) for `target`, refused for another target;
    `options` (depth, top_k, num_nodes) override the set's drafting defaults. `.compose(strategy)` → a drafter."""
    return DrafterSet.load(folder, target, **options)
