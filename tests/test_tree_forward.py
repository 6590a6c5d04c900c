"""One tree-masked target pass equals separate forwards of each root-to-leaf path; cache compaction equals
recomputing the accepted prefix. Both tiny architectures; the Gemma 3 one has a sliding window shorter than the past."""

from __future__ import annotations

import torch

from conftest import PROMPT
from taskspec.engine.tree import DraftTree
from taskspec.models.cache import cache_length, keep_rows, new_cache

TREE = DraftTree.from_paths([[5, 6, 7], [5, 9], [11, 12, 13, 14], [11, 15]])


def _prefilled(target, prefix):
    cache = new_cache()
    target.forward(torch.tensor(prefix), cache, logit_rows=None)
    return cache


def test_tree_pass_equals_per_path_forwards(tiny_target):
    past, root = PROMPT[:-1], PROMPT[-1]
    cache = _prefilled(tiny_target, past)
    out = tiny_target.forward(torch.tensor((root, *TREE.tokens)), cache, TREE.ancestor_mask(), TREE.position_offsets(),
                              want_hidden=True)
    assert out.logits.shape == (len(TREE) + 1, tiny_target.vocab_size)
    for leaf in TREE.leaves():
        path = TREE.path_to(leaf)
        ref = tiny_target.forward(torch.tensor([root] + [TREE.tokens[n] for n in path]), _prefilled(tiny_target, past),
                                  want_hidden=True)
        rows = [0] + [n + 1 for n in path]
        torch.testing.assert_close(out.logits[rows], ref.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.hidden[rows], ref.hidden, atol=1e-5, rtol=1e-5)


def test_wrapper_matches_model_forward(tiny_target):
    ids = torch.tensor(PROMPT)
    ours = tiny_target.forward(ids, new_cache()).logits
    theirs = tiny_target.model(input_ids=ids[None], use_cache=False).logits[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert tiny_target.check_head_matches_model() < 1e-5


def test_compaction_equals_recomputing_accepted_prefix(tiny_target):
    past, root = PROMPT[:-1], PROMPT[-1]
    cache = _prefilled(tiny_target, past)
    tiny_target.forward(torch.tensor((root, *TREE.tokens)), cache, TREE.ancestor_mask(), TREE.position_offsets())
    accepted = TREE.path_to(TREE.leaves()[2])  # a path that is not a prefix of node order: needs real compaction
    assert [n + 1 for n in accepted] != list(range(1, len(accepted) + 1))
    keep_rows(cache, len(past), [0] + [n + 1 for n in accepted])
    committed = PROMPT + [TREE.tokens[n] for n in accepted]
    assert cache_length(cache) == len(committed)
    probe = torch.tensor([4, 44])
    after_compaction = tiny_target.forward(probe, cache).logits
    recomputed = tiny_target.forward(probe, _prefilled(tiny_target, committed)).logits
    torch.testing.assert_close(after_compaction, recomputed, atol=1e-5, rtol=1e-5)


def test_chain_compaction_is_a_crop(tiny_target):
    cache = _prefilled(tiny_target, PROMPT)
    keep_rows(cache, 4, [0, 1, 2])
    assert cache_length(cache) == 7
    probe = torch.tensor([4])
    torch.testing.assert_close(tiny_target.forward(probe, cache).logits,
                               tiny_target.forward(probe, _prefilled(tiny_target, PROMPT[:7])).logits,
                               atol=1e-5, rtol=1e-5)
