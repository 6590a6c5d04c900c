"""Drafter sets: a folder of drafters for one target (a generic one, per-task specialists, mixes) plus routers.

    DIR/drafterset.json        manifest (below); written last by `taskspec build`, atomically
    DIR/taskmap.json           the task map the tasks come from (`taskspec detect`)
    DIR/<member folders>       feature-drafter checkpoints or LoRA adapter folders
    DIR/routers/<kind>.json    fitted routers (tasks/routers.py)

Manifest: {"format", "version", "target": fingerprint, "kind", "tasks": [{"id", "name", "keywords", "examples"}],
"members": {name: relative folder}, "specialists": {family: {task name: member}}, "generic": member,
"routers": {kind: relative file}, "default_router": kind, "options": drafting defaults, "build": provenance}.
Member names: "generic", "head:<task>", "lora:<task>", "mixed-small", "mixed-large". Member folders are relative
to DIR, absolute, or "shipped:<kind>" (the drafter shipped with the package for the target).

`compose(strategy)` turns the set into one drafter (strategies.py: single, averaged, routed, confidence, entropy,
merged, ...). Routers are fitted by tasks/, which sits above drafters/: the set is handed a router loader by whoever
loads it (taskspec.load_drafter_set, i.e. tasks/drafter_sets.py, passes tasks.routers.load_router).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DrafterError
from ..models.causal_lm import CausalLM
from ..models.fingerprint import fingerprint_mismatch
from .loading import load_drafter
from .shipped import shipped_drafters
from .strategies import compose

FORMAT = "taskspec-drafter-set"
VERSION = 1
MANIFEST = "drafterset.json"
RouterLoader = Callable[[Path, CausalLM], object]  # (router file, target) → a router: predict(texts) → (task, conf)


@dataclass
class DrafterSet:
    folder: Path
    target: CausalLM
    manifest: dict
    options: dict = field(default_factory=dict)  # drafting options (depth, top_k, num_nodes) for every member
    load_router: RouterLoader | None = None  # tasks.routers.load_router, handed over by the caller

    # ---- loading ----------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, target: CausalLM, load_router: RouterLoader | None = None,
             **options) -> "DrafterSet":
        """Read DIR/drafterset.json; refuse a set built for another target. Members and routers load lazily;
        without `load_router` the routed strategies are refused."""
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
        return cls(folder, target, manifest, {**manifest.get("options", {}), **options}, load_router)

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
        if self.load_router is None:
            raise DrafterError(f"drafter set {str(self.folder)!r} was loaded without a router loader, so it cannot "
                               "route; load it with taskspec.load_drafter_set (tasks/drafter_sets.py)")
        return self.load_router(self._path(routers[kind]), self.target)

    def _path(self, relative: str) -> Path:
        if relative.startswith("shipped:"):  # a drafter shipped with the package, e.g. "shipped:eagle2"
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
        """A Drafter for `strategy` (strategies.py: single, averaged, routed, confidence, entropy, merged, ...)."""
        return compose(self, strategy)

    def budget(self) -> int:
        """Nodes one drafter verifies per step with the set's options: depth for a chain, num_nodes for a tree."""
        depth, top_k, nodes = (int(self.options.get(k, d)) for k, d in (("depth", 3), ("top_k", 1),
                                                                         ("num_nodes", 8)))
        return min(depth, nodes) if top_k == 1 else nodes

    def budget_options(self, nodes: int) -> dict:
        """Drafting options that make one member verify `nodes` nodes per step."""
        top_k = int(self.options.get("top_k", 1))
        if top_k == 1:
            return {"depth": nodes, "num_nodes": nodes}
        return {"num_nodes": nodes}
