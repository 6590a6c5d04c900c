"""Drafters and the spec strings that build them.

    none                          plain decoding through the engine
    ngram[:k=v,...]               prompt lookup chain (options: depth, max_ngram, min_ngram, branches, max_nodes)
    ngram-tree[:k=v,...]          prompt lookup with up to 4 branches (same options)
    model:PATH[,k=v,...]          a standalone causal LM with the target's tokenizer (options: depth, top_k, num_nodes,
                                  dtype)
    eagle2[:PATH] / hass[:PATH]   a feature-level drafter checkpoint (options: depth, top_k, num_nodes); without
                                  PATH, the one shipped for the target (drafters/shipped/)
    ngram+hass[:PATH][,k=v,...]   prompt lookup when its suffix match has >= min_ngram tokens (default 2), else the
    ngram+eagle2[:PATH]           feature drafter (options: min_ngram, max_ngram; depth, top_k, num_nodes)
    auto                          the best shipped combination for the target (ngram+hass), else ngram
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import DrafterError
from ..models.causal_lm import CausalLM
from .base import DraftContext, Drafter, NoDrafter
from .model import ModelDrafter
from .ngram import NgramDrafter


def _ints(options: dict[str, str], allowed: set[str], spec: str) -> dict[str, int]:
    unknown = set(options) - allowed
    if unknown:
        raise DrafterError(f"drafter {spec!r}: unknown option(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
    try:
        return {k: int(v) for k, v in options.items()}
    except ValueError:
        raise DrafterError(f"drafter {spec!r}: option values must be integers") from None


def _none(arg, options, target, spec) -> Drafter:
    _ints(options, set(), spec)
    return NoDrafter()


def _ngram(arg, options, target, spec, branches: int = 1) -> Drafter:
    kwargs = {"branches": branches, **_ints(options, {"depth", "max_ngram", "min_ngram", "branches", "max_nodes"}, spec)}
    return NgramDrafter(**kwargs)


def _model(arg, options, target, spec) -> Drafter:
    from ..models.target import load_target

    if not arg:
        raise DrafterError(f"drafter {spec!r}: expected model:PATH (a model folder, .gguf file or local model id)")
    dtype = options.pop("dtype", str(target.dtype).removeprefix("torch."))  # default: the target's dtype
    kwargs = _ints(options, {"depth", "top_k", "num_nodes"}, spec)
    return ModelDrafter(load_target(arg, dtype=dtype), target, **kwargs)


def _feature(arg, options, target, spec) -> Drafter:
    from .checkpoint import load_drafter
    from .shipped import SHIPPED_DIR, shipped_drafters

    kind = parse_drafter_spec(spec)[0]
    if not arg:
        shipped = shipped_drafters(target)
        if kind not in shipped:
            raise DrafterError(f"drafter {spec!r}: no {kind} drafter ships for target {target.name!r} (shipped ones "
                               f"in {SHIPPED_DIR} fit the embedded target); train one with `taskspec train --kind "
                               f"{kind}` and pass {kind}:PATH")
        arg = str(shipped[kind])
    drafter = load_drafter(arg, target, **_ints(options, {"depth", "top_k", "num_nodes"}, spec))
    if drafter.kind != kind:
        raise DrafterError(f"drafter {spec!r}: the checkpoint at {arg!r} is a {drafter.kind} drafter")
    return drafter


def _lookup_then(arg, options, target, spec) -> Drafter:
    from .fallback import FallbackDrafter

    feature_kind = parse_drafter_spec(spec)[0].partition("+")[2]
    lookup_options = {k: options.pop(k) for k in ("min_ngram", "max_ngram") if k in options}
    lookup = _ngram("", {"min_ngram": "2", **lookup_options}, target, spec)
    feature = _feature(arg, options, target, f"{feature_kind}:{arg}" if arg else feature_kind)
    return FallbackDrafter(lookup, feature, name=f"ngram+{feature_kind}")


def _auto(arg, options, target, spec) -> Drafter:
    from .shipped import auto_drafter_spec

    _ints(options, set(), spec)
    chosen = auto_drafter_spec(target)
    drafter = build_drafter(chosen, target)
    drafter.name = f"auto={chosen.partition(':')[0]}"
    return drafter


DRAFTERS: dict[str, Callable] = {
    "auto": _auto,
    "none": _none,
    "ngram": _ngram,
    "ngram-tree": lambda *a: _ngram(*a, branches=4),
    "model": _model,
    "eagle2": _feature,
    "hass": _feature,
    "ngram+eagle2": _lookup_then,
    "ngram+hass": _lookup_then,
}


def parse_drafter_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """'kind:arg,k=v,...' (or 'kind,k=v,...') → (kind, arg, options). For ngram the rest is options only."""
    cut = min((i for i in (spec.find(":"), spec.find(",")) if i >= 0), default=len(spec))
    kind, rest = spec[:cut], spec[cut + 1 :]
    arg_parts, options = [], {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if eq:
            options[key.strip()] = value.strip()
        else:
            arg_parts.append(part)
    return kind.strip(), ",".join(arg_parts), options


def build_drafter(spec: str, target: CausalLM) -> Drafter:
    """The drafter a `--drafter` spec names, for `target`: "auto", "none", "ngram[:depth=6]", "eagle2[:PATH]",
    "hass[:PATH][,depth=3,top_k=1,num_nodes=8]", "model:PATH", "ngram+hass" (README, "Drafters")."""
    kind, arg, options = parse_drafter_spec(spec)
    if kind not in DRAFTERS:
        raise DrafterError(f"unknown drafter {spec!r}; expected one of: {', '.join(DRAFTERS)} "
                           "(e.g. auto, none, ngram, ngram:depth=8, model:PATH, hass)")
    if arg and kind not in ("model", "eagle2", "hass", "ngram+eagle2", "ngram+hass"):
        raise DrafterError(f"drafter {spec!r}: {kind} takes only key=value options, got {arg!r}")
    return DRAFTERS[kind](arg, options, target, spec)


def load_drafter_set(folder, target: CausalLM, **options):
    """A drafter set (`taskspec build`) for `target`; `.compose(strategy)` gives a drafter (drafters/drafter_set.py)."""
    from .drafter_set import load_drafter_set as load

    return load(folder, target, **options)


__all__ = ["DraftContext", "Drafter", "NoDrafter", "NgramDrafter", "ModelDrafter", "build_drafter", "DRAFTERS",
           "load_drafter_set"]
