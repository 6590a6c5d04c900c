"""`model` drafter: any standalone causal LM that shares the target's tokenizer.

Chain mode (top_k = 1) drafts `depth` tokens one at a time: greedy at temperature 0; at temperature > 0 it samples
from its processed distribution and hands those distributions to the verifier (residual rejection sampling).
Tree mode (top_k > 1) grows an EAGLE-2 dynamic tree over the drafter's own KV cache and is verified by the
deterministic-draft rule.

The drafter's cache holds the committed tokens it has seen; draft nodes are appended during proposal and cropped
away afterwards, so the next proposal only feeds the newly committed tokens.
"""

from __future__ import annotations

import torch

from ..engine.drafter import DraftContext
from ..engine.sampling import logits_to_probs
from ..engine.tree import DraftTree
from ..errors import DrafterError
from ..models.cache import cache_length, crop, new_cache
from ..models.causal_lm import CausalLM
from .tree_search import GrowingTree, grow_tree


class ModelDrafter:
    needs_target_hidden = False

    def __init__(self, draft_model: CausalLM, target: CausalLM, depth: int = 5, top_k: int = 1,
                 num_nodes: int | None = None):
        check_same_vocabulary(draft_model, target)
        if depth < 1 or top_k < 1:
            raise DrafterError(f"model drafter: depth and top_k must be >= 1, got depth={depth}, top_k={top_k}")
        self.lm = draft_model
        self.vocab_size = target.vocab_size
        self.depth, self.top_k = depth, top_k
        self.num_nodes = num_nodes or (depth if top_k == 1 else depth * top_k)
        self.name = f"model:{draft_model.name}"
        self.cache = new_cache()
        self.seen = 0  # committed tokens held in self.cache

    def reset(self, prompt_ids, target_hidden=None) -> None:
        self.cache = new_cache()
        self.seen = 0

    def observe(self, committed, target_hidden=None) -> None:
        pass  # the next propose() feeds whatever it has not seen

    @torch.inference_mode()
    def propose(self, context: DraftContext) -> DraftTree:
        depth = min(self.depth, context.max_depth)
        if depth < 1:
            return DraftTree.empty()
        unseen = torch.tensor(context.tokens[self.seen:])
        root_logits = self.lm.forward(unseen, self.cache, logit_rows=slice(-1, None)).logits[0]
        self.seen = len(context.tokens)
        try:
            if self.top_k == 1 and not context.params.greedy:
                return self._sampled_chain(root_logits, depth, context)
            root = len(context.tokens) - 1
            logprobs = torch.log_softmax(self._fit(root_logits), -1)
            slots: dict[int, int] = {}  # tree node → its slot in self.cache, for nodes fed so far
            return grow_tree(logprobs, lambda frontier, tree: self._expand(frontier, tree, root, slots), depth,
                             self.top_k, self.num_nodes)
        finally:
            crop(self.cache, self.seen)

    def _expand(self, frontier: list[int], tree: GrowingTree, root_position: int,
                slot_of: dict[int, int]) -> torch.Tensor:
        """Feed the frontier nodes (each seeing the committed tokens and its own drafted ancestors)."""
        out = forward_frontier(self.lm, self.cache, self.seen, frontier, tree, slot_of, root_position,
                               input_ids=torch.tensor([tree.tokens[n] for n in frontier]))
        return torch.log_softmax(self._fit(out.logits), -1)

    def _sampled_chain(self, root_logits: torch.Tensor, depth: int, context: DraftContext) -> DraftTree:
        tokens, rows = [], []
        logits = root_logits
        for step in range(depth):
            probs = logits_to_probs(self._fit(logits), context.params)  # [vocab]
            token = int(torch.multinomial(probs, 1, generator=context.generator))
            tokens.append(token)
            rows.append(probs)
            if step + 1 < depth:
                logits = self.lm.forward(torch.tensor([token]), self.cache).logits[0]
        return DraftTree.chain(tokens, torch.stack(rows))

    def _fit(self, logits: torch.Tensor) -> torch.Tensor:
        """Drafter logits [..., draft_vocab] → [..., target_vocab]: extra rows dropped, missing ones never drafted."""
        if logits.shape[-1] >= self.vocab_size:
            return logits[..., : self.vocab_size]
        pad = logits.new_full((*logits.shape[:-1], self.vocab_size - logits.shape[-1]), float("-inf"))
        return torch.cat([logits, pad], dim=-1)


def forward_frontier(lm: CausalLM, cache, committed: int, frontier: list[int], tree: GrowingTree,
                     slot_of: dict[int, int], base_position: int, input_ids: torch.Tensor,
                     inputs_embeds: torch.Tensor | None = None, logits: bool = True, want_hidden: bool = False):
    """One drafter forward over the frontier nodes of a growing tree, on top of its own cache.

    The cache holds `committed` real positions, then the slots of the nodes fed so far (`slot_of`, updated here).
    Each frontier node sees every committed slot and its own drafted ancestors; node positions are
    base_position + depth. input_ids: [f]; inputs_embeds: [f, hidden] or None.
    """
    drafted = cache_length(cache) - committed
    past_mask = torch.zeros(len(frontier), committed + drafted, dtype=torch.bool)  # [f, past]
    past_mask[:, :committed] = True
    for row, node in enumerate(frontier):
        for ancestor in tree.ancestors(node):
            past_mask[row, slot_of[ancestor]] = True
    past_positions = torch.arange(committed + drafted)  # [past]
    for node, slot in slot_of.items():
        past_positions[slot] = base_position + tree.depths[node]
    offsets = torch.tensor([base_position + tree.depths[n] for n in frontier]) - (committed + drafted)
    out = lm.forward(input_ids, cache, tree_mask=torch.eye(len(frontier), dtype=torch.bool), position_offsets=offsets,
                     past_mask=past_mask, past_positions=past_positions, inputs_embeds=inputs_embeds,
                     logit_rows=slice(None) if logits else None, want_hidden=want_hidden)
    for row, node in enumerate(frontier):
        slot_of[node] = committed + drafted + row
    return out


def check_same_vocabulary(draft_model: CausalLM, target: CausalLM) -> None:
    """A standalone drafter must tokenize like the target; otherwise its token ids mean other words."""
    draft_tok, target_tok = draft_model.tokenizer, target.tokenizer
    if draft_tok is not None and target_tok is not None:
        if draft_tok.get_vocab() != target_tok.get_vocab():
            raise DrafterError(f"drafter {draft_model.name!r} uses a different tokenizer vocabulary than target "
                               f"{target.name!r} ({len(draft_tok)} vs {len(target_tok)} tokens); expected the same")
    elif draft_model.vocab_size != target.vocab_size:
        raise DrafterError(f"drafter {draft_model.name!r} has {draft_model.vocab_size} output tokens but target "
                           f"{target.name!r} has {target.vocab_size}; expected the same vocabulary")
