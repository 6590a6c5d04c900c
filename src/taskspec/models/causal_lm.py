"""CausalLM: a Hugging Face causal LM with a tree-masked forward over an explicit KV cache.

The target and standalone draft models both use it. A forward takes new tokens with position offsets and an
ancestor mask among themselves; every new token also sees the whole cached past (minus what a sliding-window layer
may not see). It returns logits only for the rows asked for (the 262k-row LM head is the most expensive part of a
small model's step) and, on request, the final hidden states that feature-level drafters read.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .cache import cache_length

_SUPPORTED_LAYER_TYPES = {"full_attention", "sliding_attention"}


def cache_keyword(forward) -> str:
    """The keyword a transformers forward takes the KV cache by: `cache` in recent 5.x releases, which still accept
    the older `past_key_values` but warn (a FutureWarning per call) that it goes in 5.40."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


@dataclass
class ForwardOutput:
    logits: torch.Tensor | None  # [rows, vocab] float32, rows as requested
    hidden: torch.Tensor | None  # [n, hidden]: final (normed) hidden state of every new token, when requested


class CausalLM:
    """Wraps a transformers *ForCausalLM model (eval mode) and its tokenizer (may be None for id-only use)."""

    def __init__(self, model, tokenizer=None, name: str = "model", fingerprint: dict | None = None,
                 weights_sha256: Callable[[], str | None] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config.get_text_config(decoder=True)
        self.decoder = model.get_decoder()
        self._cache_keyword = cache_keyword(self.decoder.forward)
        self.lm_head = model.get_output_embeddings()
        self.softcap = getattr(self.config, "final_logit_softcapping", None)
        self.vocab_size = self.lm_head.weight.shape[0]
        self.hidden_size = self.config.hidden_size
        self.max_positions = getattr(self.config, "max_position_embeddings", None)
        self.dtype = next(model.parameters()).dtype
        self.layer_types = tuple(getattr(self.config, "layer_types", None) or ())
        unknown = set(self.layer_types) - _SUPPORTED_LAYER_TYPES
        if unknown:
            raise ValueError(f"{name}: unsupported attention layer types {sorted(unknown)}")
        window = getattr(self.config, "sliding_window", None)
        uses_window = "sliding_attention" in self.layer_types or (
            not self.layer_types and window and getattr(self.config, "use_sliding_window", True)
        )
        self.sliding_window: int | None = int(window) if uses_window and window else None
        self.linear_kernel = "torch"  # or "taskspec-bf16" once the target's linears are patched (models/target.py)
        self.attention_kernel = "sdpa"  # or "taskspec-invariant" (batch-invariant attention, models/target.py)
        self._weights_sha256 = weights_sha256  # called once, on the first read of .fingerprint
        self._fingerprint = fingerprint or {}
        self._fingerprint.update(
            name=name,
            architecture=type(model).__name__,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.config.num_hidden_layers,
        )

    @property
    def fingerprint(self) -> dict:
        """What is recorded about this target (models/fingerprint.py). Its `sha256` is computed here, once, on first
        use: hashing reads every weight byte, which a run that compares nothing (or a draft model) never needs."""
        if self._weights_sha256 is not None:
            sha, self._weights_sha256 = self._weights_sha256(), None
            if sha:
                self._fingerprint["sha256"] = sha
        return self._fingerprint

    # ---- tokenizer conveniences ---------------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        return ids

    # ---- forward ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: DynamicCache, *args, **kwargs) -> ForwardOutput:
        """Inference forward: see `forward_with_grad` for the arguments."""
        return self.forward_with_grad(input_ids, cache, *args, **kwargs)

    def forward_with_grad(
        self,
        input_ids: torch.Tensor,  # [n] long: new tokens
        cache: DynamicCache,
        tree_mask: torch.Tensor | None = None,  # [n, n] bool ancestor mask among new tokens; None = causal
        position_offsets: torch.Tensor | None = None,  # [n] long, relative to the cache length; None = 0..n-1
        logit_rows: torch.Tensor | slice | None = slice(None),  # rows of the new tokens to project; None = no logits
        want_hidden: bool = False,
        past_mask: torch.Tensor | None = None,  # [n, past] bool: which cached slots each new token sees; None = all
        past_positions: torch.Tensor | None = None,  # [past] long: position held by each slot; None = slot index
        inputs_embeds: torch.Tensor | None = None,  # [n, hidden]: used instead of embedding input_ids (EAGLE fusion)
    ) -> ForwardOutput:
        n = input_ids.shape[0] if inputs_embeds is None else inputs_embeds.shape[0]
        past = cache_length(cache)
        if position_offsets is None:
            position_offsets = torch.arange(n)
        if tree_mask is None:
            tree_mask = torch.ones(n, n, dtype=torch.bool).tril_()
        positions = position_offsets + past  # [n]
        token_inputs = {"input_ids": input_ids.unsqueeze(0)} if inputs_embeds is None else {
            "inputs_embeds": inputs_embeds.unsqueeze(0)}
        out = self.decoder(
            **token_inputs,
            position_ids=positions.unsqueeze(0),
            attention_mask=self._attention_masks(tree_mask, positions, past, past_mask, past_positions),
            **{self._cache_keyword: cache},
            use_cache=True,
        )
        hidden = out.last_hidden_state[0]  # [n, hidden]
        logits = None if logit_rows is None else self.head(hidden[logit_rows])
        return ForwardOutput(logits=logits, hidden=hidden if want_hidden else None)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head (+ final softcapping where the architecture has it). [rows, hidden] → [rows, vocab] float32."""
        logits = self.lm_head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _attention_masks(self, tree_mask: torch.Tensor, positions: torch.Tensor, past: int,
                         past_mask: torch.Tensor | None, past_positions: torch.Tensor | None = None):
        """Boolean masks [1, 1, n, past + n] (True = may attend), one per attention layer type."""
        n = tree_mask.shape[0]
        if past_mask is None:
            past_mask = torch.ones(n, past, dtype=torch.bool)
        full = torch.cat([past_mask, tree_mask], dim=1)  # [n, past + n]
        masks = {"full_attention": full}
        if self.sliding_window:
            if past_positions is None:
                past_positions = torch.arange(past)  # the engine's invariant: cache slot i holds position i
            key_positions = torch.cat([past_positions, positions])
            in_window = (positions[:, None] - key_positions[None, :]) < self.sliding_window
            masks["sliding_attention"] = full & in_window
        masks = {kind: m[None, None] for kind, m in masks.items()}
        if self.layer_types:
            return {kind: masks[kind] for kind in set(self.layer_types)}
        return masks.get("sliding_attention", masks["full_attention"])

    @torch.inference_mode()
    def check_head_matches_model(self, num_tokens: int = 8) -> float:
        """Max |logit difference| between this wrapper and the model's own forward on a few tokens.

        Guards losslessness for architectures whose logits need post-processing this wrapper does not know about.
        """
        ids = torch.arange(1, num_tokens + 1) % self.vocab_size
        from .cache import new_cache

        ours = self.forward(ids, new_cache()).logits
        theirs = self.model(input_ids=ids.unsqueeze(0), use_cache=False).logits[0].float()
        return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-6))
