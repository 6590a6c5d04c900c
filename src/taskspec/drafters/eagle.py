"""Feature-level drafters (EAGLE-2 and HASS): one decoder layer over the target's own features.

Architecture (the same for both kinds; they differ in training):

    input at drafter position p:  fc([embed(x_{p+1}) ; f_p])        # [2·hidden] → [hidden]
    one decoder layer of the target's family (+ its final norm)      # predicts f̂_{p+1}
    head: the target's LM head restricted to the draft vocabulary   # f̂_{p+1} → logits of x_{p+2} over draft ids

f_p is the target's final (normed) hidden state at position p, `embed` the target's frozen token embedding, and the
head is the target's own output embedding rows for the draft vocabulary (frozen, not stored in the checkpoint), so
a drafter costs one decoder layer plus a 32k-row head per step and ships as a few MB.

During drafting, a node at depth d under the root (the last committed token, position T-1) is fed at position
T-2+d with the predicted feature of its parent; the root's own prediction comes from the last committed pair.
After each verification the drafter's cache is cropped back to the committed pairs and the real target features of
the newly committed tokens replace the predicted ones.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..engine.drafter import DraftContext
from ..engine.sampling import logits_to_probs
from ..engine.tree import DraftTree
from ..errors import DrafterError
from ..models.cache import crop, new_cache
from ..models.causal_lm import CausalLM
from .lean_body import LeanBody
from .model import forward_frontier
from .tree_search import GrowingTree, grow_tree
from .vocab import DraftVocab

KINDS = ("eagle2", "hass")


def body_config(target: CausalLM):
    """The target's text config cut to one full-attention layer, with a dummy 1-token vocabulary (inputs are
    embeddings and the head lives outside)."""
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = 1
    if getattr(config, "layer_types", None):
        config.layer_types = ["full_attention"]
    config.vocab_size = 1
    config.pad_token_id = config.bos_token_id = config.eos_token_id = None
    if hasattr(config, "unk_token_id"):
        config.unk_token_id = None
    config.tie_word_embeddings = False
    config.use_cache = True
    return config


class EagleModel(nn.Module):
    """The trainable part: fusion layer + one decoder layer (with its final norm)."""

    def __init__(self, config):
        super().__init__()
        from transformers import AutoModelForCausalLM

        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=False)
        self.body = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        self.config = config

    def fuse(self, token_embeds: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """[n, hidden] token embeddings and [n, hidden] features → [n, hidden] decoder inputs."""
        return self.fc(torch.cat([token_embeds, features.to(token_embeds.dtype)], dim=-1))


class EagleDrafter:
    """Drafter protocol over an EagleModel, verified against `target`.

    Defaults (a 3-token chain) are the fastest setting measured on the embedded target on 2 CPU cores, where a
    drafter step costs a few ms and verifying a wider tree costs more than its extra accepted tokens bring
    (docs/history.md, "tree shape"); wider trees (top_k > 1) give a longer τ."""

    needs_target_hidden = True

    def __init__(self, model: EagleModel, vocab: DraftVocab, target: CausalLM, kind: str = "eagle2",
                 depth: int = 3, top_k: int = 1, num_nodes: int = 8, name: str | None = None, lean: bool = True):
        if kind not in KINDS:
            raise DrafterError(f"feature drafter kind {kind!r}: expected one of {', '.join(KINDS)}")
        if depth < 1 or top_k < 1 or num_nodes < 1:
            raise DrafterError(f"{kind} drafter: depth, top_k and num_nodes must be >= 1, got {depth}, {top_k}, "
                               f"{num_nodes}")
        if vocab.target_vocab_size != target.vocab_size:
            raise DrafterError(f"{kind} drafter: its draft vocabulary maps into {vocab.target_vocab_size} target ids "
                               f"but target {target.name!r} has {target.vocab_size}")
        if model.config.hidden_size != target.hidden_size:
            raise DrafterError(f"{kind} drafter: hidden size {model.config.hidden_size} does not match target "
                               f"{target.name!r} ({target.hidden_size})")
        self.kind, self.depth, self.top_k, self.num_nodes = kind, depth, top_k, num_nodes
        self.name = name or kind
        # True: draft the argmax chain (a deterministic tree) even at T > 0, as merged trees need (compose.py)
        self.deterministic = False
        self.model = model.eval()
        # the decoder layer called directly (lean_body.py); lean=False: through the model forward (the reference)
        self.lm = LeanBody(model.body) if lean else CausalLM(model.body, name=self.name)
        self.vocab = vocab
        self.target = target
        self.embed = target.model.get_input_embeddings()  # frozen, shared with the target
        head = target.lm_head.weight  # [target_vocab, hidden]
        self.head_weight = head.detach()[vocab.d2t].contiguous()  # [draft_vocab, hidden]
        self.head = nn.Linear(head.shape[1], len(vocab), bias=False)
        self.head.weight = nn.Parameter(self.head_weight, requires_grad=False)
        self.softcap = target.softcap
        # bf16 on CPUs without native bf16: torch's matmul is slow, so use the target's kernel when it does
        self.use_kernel = getattr(target, "linear_kernel", None) == "taskspec-bf16" and model.fc.weight.dtype == \
            self.head_weight.dtype == torch.bfloat16
        if self.use_kernel:
            from ..kernels import patch_linears

            patch_linears(self.model)
            patch_linears(self.head)
        self.reset([])

    # ---- protocol ---------------------------------------------------------------------------------------------------
    def reset(self, prompt_ids, target_hidden=None) -> None:
        self.cache = new_cache()
        self.features: list[torch.Tensor] = [] if target_hidden is None else [target_hidden]  # unfed rows
        self.fed = 0  # drafter positions in self.cache (pairs (f_p, x_{p+1}) with p < fed)
        self._root: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (len(tokens), root hidden, root logits)

    def observe(self, committed, target_hidden=None) -> None:
        if target_hidden is None:
            raise DrafterError(f"{self.name} drafter needs the target's hidden states")
        self.features.append(target_hidden)

    @torch.inference_mode()
    def propose(self, context: DraftContext) -> DraftTree:
        depth = min(self.depth, context.max_depth)
        tokens = context.tokens
        if depth < 1 or len(tokens) < 2:
            return DraftTree.empty()
        root_hidden, root_logits = self.root_prediction(tokens)  # [hidden], [draft_vocab]
        try:
            if self.top_k == 1:  # a chain: no tree search needed (at T=0 the same drafts grow_tree would pick)
                return self._chain(root_logits, root_hidden, min(depth, self.num_nodes), context)
            hidden_of: dict[int, torch.Tensor] = {}
            slots: dict[int, int] = {}
            base = len(tokens) - 2  # node at depth d sits at drafter position base + d
            tree = grow_tree(torch.log_softmax(root_logits, -1),
                             lambda frontier, grown: self._expand(frontier, grown, root_hidden, hidden_of, slots, base),
                             depth, self.top_k, self.num_nodes)
            return DraftTree(tuple(self.vocab.d2t[list(tree.tokens)].tolist()), tree.parents)
        finally:
            crop(self.cache, self.fed)

    @torch.inference_mode()
    def draft_scores(self, context: DraftContext, steps: int = 1) -> tuple[float, float]:
        """(confidence, entropy) of this drafter's first `steps` draft steps from the committed context: the mean
        top-1 probability and the mean entropy (nats) of its raw (temperature 1) distributions along its argmax chain.

        Confidence and entropy routing (TAPS) compare specialists by these. They depend on the committed tokens only,
        never on a sampled draft, so choosing a drafter by them keeps sampled verification exact."""
        tokens = context.tokens
        if len(tokens) < 2:
            return 0.0, math.inf
        hidden, logits = self.root_prediction(tokens)
        confidences, entropies = [], []
        try:
            for step in range(max(1, steps)):
                logp = torch.log_softmax(logits, -1)  # [draft_vocab]
                confidences.append(float(logp.max().exp()))
                entropies.append(float(-(logp.exp() * logp).sum()))
                if step + 1 < steps:
                    ids = self.vocab.d2t[logp.argmax()[None]]  # [1]
                    embeds = self.model.fuse(self.embed(ids), hidden[None])
                    hidden = self.lm.forward(ids, self.cache, logit_rows=None, want_hidden=True,
                                             inputs_embeds=embeds).hidden[0]
                    logits = self.logits(hidden[None])[0]
        finally:
            crop(self.cache, self.fed)
        return sum(confidences) / len(confidences), sum(entropies) / len(entropies)

    def root_prediction(self, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """([hidden] predicted feature, [draft_vocab] logits) at the root; computed once per committed length, so
        scoring a drafter and then drafting with it feeds the committed pairs once."""
        if self._root is None or self._root[0] != len(tokens):
            hidden = self._feed_committed(tokens)
            self._root = (len(tokens), hidden, self.logits(hidden[None])[0])
        return self._root[1], self._root[2]

    # ---- internals --------------------------------------------------------------------------------------------------
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, hidden] predicted features → [n, draft_vocab] float32 logits through the target's head rows."""
        logits = self.head(hidden.to(self.head_weight.dtype)).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _feed_committed(self, tokens: list[int]) -> torch.Tensor:
        """Feed the pairs (f_p, x_{p+1}) not yet in the cache; return the last one's output (root prediction)."""
        features = torch.cat(self.features) if self.features else torch.zeros(0, self.target.hidden_size)
        end = len(tokens) - 1  # pairs p < end are known: f_p for p <= T-2 and x_{p+1} <= root
        new = end - self.fed
        if features.shape[0] != new:
            raise DrafterError(f"{self.name} drafter: expected {new} new target feature rows, got {features.shape[0]}")
        ids = torch.tensor(tokens[self.fed + 1 : end + 1])
        embeds = self.model.fuse(self.embed(ids), features)  # [new, hidden]
        out = self.lm.forward(ids, self.cache, logit_rows=None, want_hidden=True, inputs_embeds=embeds)
        self.fed = end
        self.features = []
        return out.hidden[-1]

    def _expand(self, frontier: list[int], tree: GrowingTree, root_hidden: torch.Tensor,
                hidden_of: dict[int, torch.Tensor], slots: dict[int, int], base: int) -> torch.Tensor:
        target_ids = self.vocab.d2t[[tree.tokens[n] for n in frontier]]  # [f]
        parent_hidden = torch.stack([root_hidden if tree.parents[n] < 0 else hidden_of[tree.parents[n]]
                                     for n in frontier])  # [f, hidden]
        embeds = self.model.fuse(self.embed(target_ids), parent_hidden)
        out = forward_frontier(self.lm, self.cache, self.fed, frontier, tree, slots, base, target_ids,
                               inputs_embeds=embeds, logits=False, want_hidden=True)
        for row, node in enumerate(frontier):
            hidden_of[node] = out.hidden[row]
        return torch.log_softmax(self.logits(out.hidden), -1)  # [f, draft_vocab]

    def _chain(self, root_logits: torch.Tensor, root_hidden: torch.Tensor, depth: int,
               context: DraftContext) -> DraftTree:
        """top_k = 1: each draft is the drafter's argmax at T=0 (a deterministic chain); at T > 0 it is sampled
        from the drafter's processed distribution, which the residual rule needs as draft_probs, unless
        `deterministic` is set (then the argmax chain, verified by the deterministic-draft rule)."""
        greedy = context.params.greedy or self.deterministic
        tokens, rows = [], []
        logits, hidden = root_logits, root_hidden
        for step in range(depth):
            if greedy:
                draft_id = int(torch.argmax(logits))
            else:
                draft_probs = logits_to_probs(logits, context.params)  # [draft_vocab]
                draft_id = int(torch.multinomial(draft_probs, 1, generator=context.generator))
                full = torch.zeros(self.vocab.target_vocab_size)
                full[self.vocab.d2t] = draft_probs
                rows.append(full)
            token = int(self.vocab.d2t[draft_id])
            tokens.append(token)
            if step + 1 < depth:  # the chain continues at the next position, right after the committed cache
                ids = torch.tensor([token])
                embeds = self.model.fuse(self.embed(ids), hidden[None])
                out = self.lm.forward(ids, self.cache, logit_rows=None, want_hidden=True, inputs_embeds=embeds)
                hidden = out.hidden[0]
                logits = self.logits(hidden[None])[0]
        return DraftTree.chain(tokens, torch.stack(rows) if rows else None)


def random_drafter(target: CausalLM, kind: str = "eagle2", draft_vocab_size: int | None = None, seed: int = 0,
                   **options) -> EagleDrafter:
    """An untrained drafter (random weights) for tests and for training to start from."""
    torch.manual_seed(seed)
    model = EagleModel(body_config(target)).to(target.dtype)
    size = draft_vocab_size or target.vocab_size
    counts = torch.arange(target.vocab_size, 0, -1)  # without data: the lowest ids
    vocab = DraftVocab.from_counts(counts, size, always=target.eos_token_ids)
    return EagleDrafter(model, vocab, target, kind, **options)
