"""Benchmark methods: the engine with any drafter, and two peers measured the same way.

    none, ngram[...], ngram-tree[...], model:PATH[...]   the taskspec engine with that drafter
    single, averaged, routed:R, confidence, merged, ...  a composition of a drafter set (`--drafter-set DIR`)
    hf-generate                                          transformers `generate` (greedy or sampled)
    hf-prompt-lookup[:N]                                 transformers `generate(prompt_lookup_num_tokens=N)`, N=10

Every method returns the new tokens and a SpecStats. For the peers, target_steps counts the target's forward
calls (their prefill emits the first token, as the engine's does, so τ = new tokens / calls, 1.0 for plain
generate).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from ..drafters.kinds import build_drafter
from ..drafters.strategies import is_strategy
from ..engine.decode import GenerationConfig, generate
from ..engine.stats import SpecStats
from ..errors import TaskspecError
from ..models.causal_lm import CausalLM


@dataclass
class MethodRun:
    token_ids: list[int]
    stats: SpecStats
    routing: dict[str, int] | None = None  # composed drafters: which specialist drafted (requests or steps)


class EngineMethod:
    def __init__(self, spec: str, target: CausalLM, drafter=None):
        self.name = spec
        self.target = target
        self.drafter = drafter if drafter is not None else build_drafter(spec, target)

    def run(self, prompt_ids: list[int], config: GenerationConfig) -> MethodRun:
        choices = getattr(self.drafter, "choices", None)
        before = dict(choices) if choices is not None else None
        result = generate(self.target, self.drafter, prompt_ids, config)
        routing = None
        if choices is not None:
            routing = {k: v - before.get(k, 0) for k, v in choices.items() if v - before.get(k, 0)}
        return MethodRun(result.token_ids, result.stats, routing)


class HFGenerateMethod:
    """transformers' own decoding loop, optionally with its prompt-lookup assistant."""

    def __init__(self, spec: str, target: CausalLM, prompt_lookup_tokens: int | None = None):
        self.name = spec
        self.target = target
        self.prompt_lookup_tokens = prompt_lookup_tokens

    @torch.inference_mode()
    def run(self, prompt_ids: list[int], config: GenerationConfig) -> MethodRun:
        model, params = self.target.model, config.sampling
        calls = [0]
        hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=not params.greedy,
                      pad_token_id=next(iter(self.target.eos_token_ids), 0))
        eos = sorted(self.target.eos_token_ids)
        kwargs["eos_token_id"] = eos if config.stop_on_eos and eos else None
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        if self.prompt_lookup_tokens:
            kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup_tokens
        torch.manual_seed(config.seed)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = model.generate(torch.tensor([prompt_ids]), **kwargs)
        finally:
            hook.remove()
        elapsed = time.perf_counter() - start
        new = out[0, len(prompt_ids):].tolist()
        stats = SpecStats(requests=1, prompt_tokens=len(prompt_ids), new_tokens=len(new), target_steps=calls[0],
                          time_total=elapsed)
        return MethodRun(new, stats)


def build_method(spec: str, target: CausalLM, drafter_set=None):
    """A method by name; with a drafter set, composition strategies (drafters/drafter_set.py) are methods too."""
    kind, _, arg = spec.partition(":")
    if drafter_set is not None and is_strategy(spec):
        return EngineMethod(spec, target, drafter_set.compose(spec))
    if kind == "hf-generate":
        if arg:
            raise TaskspecError(f"method {spec!r}: hf-generate takes no options")
        return HFGenerateMethod(spec, target)
    if kind == "hf-prompt-lookup":
        try:
            tokens = int(arg) if arg else 10
        except ValueError:
            raise TaskspecError(f"method {spec!r}: expected hf-prompt-lookup[:N] with N an integer") from None
        return HFGenerateMethod(spec, target, prompt_lookup_tokens=tokens)
    return EngineMethod(spec, target)


def split_method_list(items: list[str]) -> list[str]:
    """['none,ngram:depth=8,branches=2', 'hf-generate'] → ['none', 'ngram:depth=8,branches=2', 'hf-generate'].

    Commas separate methods, except before a key=value piece, which belongs to the method before it.
    """
    methods: list[str] = []
    for item in items:
        for piece in filter(None, (p.strip() for p in item.split(","))):
            if "=" in piece and ":" not in piece.split("=")[0] and methods:
                methods[-1] += "," + piece
            else:
                methods.append(piece)
    return methods
