"""Drafter kinds: what `--drafter` accepts, each registered with its argument, options and help (registry.py);
`build_drafter(spec, target)` builds one. Builders import their modules when called, so the CLI can list the kinds
without loading torch.

    auto                          the best shipped combination for the target (ngram+hass), else ngram
    none                          plain decoding through the engine
    ngram / ngram-tree            prompt lookup, a chain or up to 4 branches
    model:PATH                    a standalone causal LM with the target's tokenizer
    eagle2[:PATH] / hass[:PATH]   a feature-level drafter checkpoint; without PATH, the one shipped for the target
    ngram+eagle2 / ngram+hass     prompt lookup when its suffix match has >= min_ngram tokens (default 2), else the
                                  feature drafter
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DrafterError
from .registry import Registry, Spec

if TYPE_CHECKING:
    from ..engine.drafter import Drafter
    from ..models.causal_lm import CausalLM

DRAFTER_KINDS = Registry("drafter")
NGRAM_OPTIONS = {k: int for k in ("depth", "max_ngram", "min_ngram", "branches", "max_nodes")}
TREE_OPTIONS = {k: int for k in ("depth", "top_k", "num_nodes")}
LOOKUP_OPTIONS = {"min_ngram": int, "max_ngram": int}  # of the prompt lookup in front of a feature drafter


def build_drafter(spec: str, target: CausalLM) -> Drafter:
    """The drafter a `--drafter` spec names, for `target`: "auto", "none", "ngram[:depth=6]", "eagle2[:PATH]",
    "hass[:PATH][,depth=3,top_k=1,num_nodes=8]", "model:PATH", "ngram+hass" (README, "Drafters")."""
    entry, parsed = DRAFTER_KINDS.parse(spec)
    return entry.build(parsed, target)


@DRAFTER_KINDS.register("auto", help="prompt lookup plus the drafter shipped for the target (ngram+hass), else ngram")
def _auto(spec: Spec, target: CausalLM) -> Drafter:
    from .shipped import auto_drafter_spec

    chosen = auto_drafter_spec(target)
    drafter = build_drafter(chosen, target)
    drafter.name = f"auto={chosen.partition(':')[0]}"
    return drafter


@DRAFTER_KINDS.register("none", help="plain decoding through the same engine (the denominator of every speedup)")
def _none(spec: Spec, target: CausalLM) -> Drafter:
    from ..engine.drafter import NoDrafter

    return NoDrafter()


@DRAFTER_KINDS.register("ngram-tree", help="the same with up to four matched continuations as a tree",
                        options=NGRAM_OPTIONS)
@DRAFTER_KINDS.register("ngram", help="prompt lookup: propose what followed the last match in prompt + output",
                        options=NGRAM_OPTIONS)
def _ngram(spec: Spec, target: CausalLM) -> Drafter:
    from .ngram import NgramDrafter

    return NgramDrafter(**{"branches": 4 if spec.name == "ngram-tree" else 1, **spec.options})


@DRAFTER_KINDS.register("model", help="a small causal LM with the target's tokenizer (a folder, .gguf or local "
                        "model id; top_k > 1 grows a dynamic tree)", arg="PATH", arg_required=True,
                        options={**TREE_OPTIONS, "dtype": str})
def _model(spec: Spec, target: CausalLM) -> Drafter:
    from ..models.target import load_target
    from .model import ModelDrafter

    options = dict(spec.options)
    dtype = options.pop("dtype", str(target.dtype).removeprefix("torch."))  # default: the target's dtype
    return ModelDrafter(load_target(spec.arg, dtype=dtype), target, **options)


@DRAFTER_KINDS.register("hass", help="a trained HASS drafter (without PATH: the one shipped for the target)",
                        arg="PATH", options=TREE_OPTIONS)
@DRAFTER_KINDS.register("eagle2", help="a trained EAGLE-2 feature-level drafter (without PATH: the one shipped for "
                        "the target; top_k > 1 drafts a dynamic tree)", arg="PATH", options=TREE_OPTIONS)
def _feature(spec: Spec, target: CausalLM) -> Drafter:
    return feature_drafter(spec.name, spec.arg, spec.options, target, spec.text)


@DRAFTER_KINDS.register("ngram+hass", help="the same with the HASS drafter", arg="PATH",
                        options={**LOOKUP_OPTIONS, **TREE_OPTIONS})
@DRAFTER_KINDS.register("ngram+eagle2", help="prompt lookup when the last min_ngram tokens occurred before, else the "
                        "EAGLE-2 drafter", arg="PATH", options={**LOOKUP_OPTIONS, **TREE_OPTIONS})
def _lookup_then(spec: Spec, target: CausalLM) -> Drafter:
    from .fallback import FallbackDrafter
    from .ngram import NgramDrafter

    kind = spec.name.removeprefix("ngram+")
    lookup = NgramDrafter(**{"min_ngram": 2, **{k: v for k, v in spec.options.items() if k in LOOKUP_OPTIONS}})
    tree_options = {k: v for k, v in spec.options.items() if k not in LOOKUP_OPTIONS}
    feature = feature_drafter(kind, spec.arg, tree_options, target, spec.text)
    return FallbackDrafter(lookup, feature, name=spec.name)


def feature_drafter(kind: str, path: str, options: dict, target: CausalLM, text: str) -> Drafter:
    """The `kind` checkpoint at `path`, or the one shipped for the target when `path` is empty."""
    from .loading import load_drafter
    from .shipped import SHIPPED_DIR, shipped_drafters

    if not path:
        shipped = shipped_drafters(target)
        if kind not in shipped:
            raise DrafterError(f"drafter {text!r}: no {kind} drafter ships for target {target.name!r} (shipped ones "
                               f"in {SHIPPED_DIR} fit the embedded target); train one with `taskspec train --kind "
                               f"{kind}` and pass {kind}:PATH")
        path = str(shipped[kind])
    drafter = load_drafter(path, target, **options)
    if drafter.kind != kind:
        raise DrafterError(f"drafter {text!r}: the checkpoint at {path!r} is a {drafter.kind} drafter")
    return drafter
