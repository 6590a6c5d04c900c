"""The decode loop: prefill → [propose → verify → commit]* → tokens, text and SpecStats.

Cache invariant: the target's KV cache holds every committed token except the last one (the *root*). Prefill runs
the whole prompt and emits the first new token (a step with an empty tree), like any plain decoder. Each step
sends [root, draft nodes...] through the target in one tree-masked pass; the root's row gives the distribution of
depth-1 drafts, node i's row that of its children. After acceptance the cache is compacted to the root plus the
accepted path and the bonus token becomes the new root. Plain decoding is the same loop with an empty tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import GenerationInputError
from ..models.cache import cache_length, keep_rows, new_cache
from ..models.causal_lm import CausalLM
from .drafter import DraftContext, Drafter
from .sampling import SamplingParams
from .stats import SpecStats
from .tree import DraftTree
from .verify import verify_tree


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    stop_strings: tuple[str, ...] = ()
    stop_on_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise GenerationInputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(not s for s in self.stop_strings):
            raise GenerationInputError("stop strings must be non-empty")


@dataclass
class GenerationResult:
    token_ids: list[int]  # new tokens only (an EOS that stopped decoding included)
    text: str | None  # decoded new tokens (special tokens skipped); None without a tokenizer
    stats: SpecStats

    def to_dict(self) -> dict:
        return {"text": self.text, "token_ids": self.token_ids, "stats": self.stats.to_dict()}


def encode_prompt(target: CausalLM, prompt: str | list[int]) -> list[int]:
    """Token ids of a prompt (text through the target's tokenizer, with its BOS), validated."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise GenerationInputError("prompt is empty; expected some text to continue")
        if target.tokenizer is None:
            raise GenerationInputError(f"target {target.name!r} has no tokenizer; pass token ids instead of text")
        ids = target.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        ids = [int(t) for t in prompt]
        if not ids:
            raise GenerationInputError("prompt is empty; expected at least one token id")
        bad = [t for t in ids if not 0 <= t < target.vocab_size]
        if bad:
            raise GenerationInputError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {target.vocab_size})")
    return ids


@torch.inference_mode()
def generate(target: CausalLM, drafter: Drafter, prompt: str | list[int],
             config: GenerationConfig = GenerationConfig()) -> GenerationResult:
    """Decode one request losslessly with `drafter` proposing and `target` verifying."""
    start = time.perf_counter()
    ids = encode_prompt(target, prompt)
    limit = target.max_positions
    if limit and len(ids) + config.max_new_tokens > limit:
        raise GenerationInputError(f"prompt of {len(ids)} tokens + max_new_tokens {config.max_new_tokens} exceeds the "
                                   f"target's context of {limit} positions; shorten the prompt or lower max_new_tokens")
    stats = SpecStats(requests=1, prompt_tokens=len(ids))
    generator = torch.Generator().manual_seed(config.seed)
    eos = target.eos_token_ids if config.stop_on_eos else set()
    hidden = drafter.needs_target_hidden

    # Prefill is also the first verification step (of an empty tree rooted at the prompt's last token): it emits
    # the first new token, which becomes the root, so the cache again holds every committed token but the root.
    cache = new_cache()
    prefill = target.forward(torch.tensor(ids), cache, logit_rows=slice(-1, None), want_hidden=hidden)
    first = verify_tree(DraftTree.empty(), prefill.logits, config.sampling, generator).bonus_token
    drafter.reset(list(ids), prefill.hidden[:-1] if hidden else None)
    drafter.observe([first], prefill.hidden[-1:] if hidden else None)
    stats.record_step(0, 0)
    tokens = [*ids, first]
    output: list[int] = [first]
    stats.time_prefill = time.perf_counter() - start
    stop = _stop_index(target, output, 1, eos, config.stop_strings)
    if stop is not None:
        output = output[:stop]

    while stop is None and len(output) < config.max_new_tokens:
        root_slot = cache_length(cache)  # == len(tokens) - 1
        max_depth = config.max_new_tokens - len(output) - 1
        if limit:
            max_depth = min(max_depth, limit - len(tokens))

        t0 = time.perf_counter()
        tree = drafter.propose(DraftContext(tokens, config.sampling, generator, max_depth)).prune(max_depth)
        t1 = time.perf_counter()
        step = target.forward(torch.tensor((tokens[-1], *tree.tokens)), cache, tree.ancestor_mask(),
                              tree.position_offsets(), want_hidden=hidden)
        t2 = time.perf_counter()
        result = verify_tree(tree, step.logits, config.sampling, generator)
        t3 = time.perf_counter()

        kept_rows = [0, *(node + 1 for node in result.accepted)]
        keep_rows(cache, root_slot, kept_rows)
        committed = [tree.tokens[node] for node in result.accepted] + [result.bonus_token]
        reached = sum(1 for row in kept_rows if tree.children[row])
        stats.record_step(len(result.accepted), reached)
        stats.draft_nodes += len(tree)
        drafter.observe(committed, step.hidden[kept_rows] if hidden else None)
        tokens.extend(committed)
        output.extend(committed)
        stats.time_draft += t1 - t0
        stats.time_target += t2 - t1
        stats.time_accept += t3 - t2
        stop = _stop_index(target, output, len(committed), eos, config.stop_strings)
        if stop is not None:
            output = output[:stop]
            break

    output = output[: config.max_new_tokens]
    stats.new_tokens = len(output)
    text = target.tokenizer.decode(output, skip_special_tokens=True) if target.tokenizer is not None else None
    stats.time_total = time.perf_counter() - start
    return GenerationResult(output, text, stats)


def _stop_index(target: CausalLM, output: list[int], num_new: int, eos: set[int],
                stop_strings: tuple[str, ...]) -> int | None:
    """Length to cut `output` to if one of the last `num_new` tokens ends the request (EOS or a stop string)."""
    first_new = len(output) - num_new
    for i in range(first_new, len(output)):
        if output[i] in eos:
            return i + 1
    if stop_strings and target.tokenizer is not None:
        decode = target.tokenizer.decode
        if any(s in decode(output) for s in stop_strings):
            for end in range(max(first_new, 1), len(output) + 1):
                if any(s in decode(output[:end]) for s in stop_strings):
                    return end
    return None
