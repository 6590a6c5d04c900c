"""Feature-level drafter (EAGLE-2 / HASS architecture): vocabulary map, tree validity, greedy losslessness."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import PROMPT, reference_greedy, tiny_gemma3, tiny_llama
from taskspec.drafters.eagle import EagleDrafter, EagleModel, body_config, random_drafter
from taskspec.drafters.vocab import DraftVocab
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.drafter import DraftContext
from taskspec.engine.sampling import SamplingParams
from taskspec.errors import DrafterError

NEW = 32


def test_vocab_keeps_most_frequent_and_round_trips():
    counts = torch.tensor([5, 0, 9, 9, 1, 7, 0, 3])
    vocab = DraftVocab.from_counts(counts, 4, always=[6])
    assert vocab.d2t.tolist() == [2, 3, 5, 6]  # 9, 9, 7 by count (ties by id), then the required 6; sorted by id
    assert vocab.to_draft(vocab.d2t).tolist() == list(range(4))
    assert vocab.to_target(torch.arange(4)).tolist() == vocab.d2t.tolist()
    assert vocab.to_draft(torch.tensor([0, 1])).tolist() == [-1, -1]
    assert vocab.coverage(counts) == pytest.approx((9 + 9 + 7 + 0) / 34)


@pytest.mark.parametrize("d2t, match", [([], "empty"), ([0, 99], "outside"), ([1, 1], "same target id")])
def test_vocab_rejects_bad_maps(d2t, match):
    with pytest.raises(DrafterError, match=match):
        DraftVocab(torch.tensor(d2t, dtype=torch.long), 10)


@pytest.mark.parametrize("make_target", [tiny_llama, tiny_gemma3], ids=["llama", "gemma3"])
@pytest.mark.parametrize("options", [dict(top_k=1, depth=4, num_nodes=4), dict(top_k=4, depth=4, num_nodes=12)],
                         ids=["chain", "dynamic-tree"])
def test_random_feature_drafter_keeps_greedy_output(make_target, options):
    target = make_target()
    drafter = random_drafter(target, draft_vocab_size=64, **options)
    accepted = 0
    for shift in range(4):
        prompt = [(t + shift) % target.vocab_size for t in PROMPT]
        result = generate(target, drafter, prompt, GenerationConfig(max_new_tokens=NEW, stop_on_eos=False))
        assert result.token_ids == reference_greedy(target, prompt, NEW)
        accepted += sum(result.stats.accepted_per_depth)
    if options["top_k"] > 1:
        assert accepted > 0, "the dynamic tree never matched: the test did not exercise acceptance"


def test_dynamic_tree_is_valid():
    target = tiny_llama()
    drafter = random_drafter(target, depth=5, top_k=3, num_nodes=10)
    drafter.reset(PROMPT, _prefill_hidden(target, PROMPT))
    tree = drafter.propose(DraftContext(list(PROMPT), SamplingParams(0.0), torch.Generator(), max_depth=5))
    assert 0 < len(tree) <= 10
    assert all(p < i for i, p in enumerate(tree.parents))
    assert max(tree.depths) <= 5
    assert set(tree.tokens) <= set(drafter.vocab.d2t.tolist())
    mask = tree.ancestor_mask()
    assert mask.shape == (len(tree) + 1, len(tree) + 1) and mask.diagonal().all()


def test_sampled_chain_is_reproducible_and_draftable_only():
    target = tiny_llama()
    drafter = random_drafter(target, draft_vocab_size=50, top_k=1, depth=3)
    config = GenerationConfig(max_new_tokens=20, sampling=SamplingParams(1.0), seed=3, stop_on_eos=False)
    first, second = generate(target, drafter, PROMPT, config), generate(target, drafter, PROMPT, config)
    assert first.token_ids == second.token_ids
    drafter.reset(PROMPT, _prefill_hidden(target, PROMPT))
    tree = drafter.propose(DraftContext(list(PROMPT), SamplingParams(1.0), torch.Generator().manual_seed(0), 3))
    assert tree.sampled and len(tree) == 3
    outside = torch.ones(target.vocab_size, dtype=torch.bool)
    outside[drafter.vocab.d2t] = False
    assert float(tree.draft_probs[:, outside].sum()) == 0.0  # never drafts outside the draft vocabulary


def test_mismatched_target_is_rejected():
    small, other = tiny_llama(), tiny_llama(vocab=50)
    model = EagleModel(body_config(small))
    with pytest.raises(DrafterError, match="target ids"):
        EagleDrafter(model, DraftVocab.full(small.vocab_size), other)
    with pytest.raises(DrafterError, match="kind"):
        EagleDrafter(model, DraftVocab.full(small.vocab_size), small, kind="medusa")


def _prefill_hidden(target, prompt):
    from taskspec.models.cache import new_cache

    return target.forward(torch.tensor(prompt[:-1]), new_cache(), logit_rows=None, want_hidden=True).hidden


# ---- checkpoints ---------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_drafts(tmp_path):
    from taskspec.drafters.kinds import build_drafter
    from taskspec.drafters.checkpoint import save_drafter

    target = tiny_gemma3()
    drafter = random_drafter(target, kind="hass", draft_vocab_size=40, top_k=3, depth=3, num_nodes=6)
    save_drafter(drafter, tmp_path / "ckpt")
    save_drafter(drafter, tmp_path / "ckpt")  # overwriting an existing checkpoint is atomic and leaves no debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded = build_drafter(f"hass:{tmp_path / 'ckpt'},top_k=3,depth=3,num_nodes=6", target)
    assert torch.equal(loaded.vocab.d2t, drafter.vocab.d2t)
    config = GenerationConfig(max_new_tokens=12, stop_on_eos=False)
    assert generate(target, loaded, PROMPT, config).token_ids == generate(target, drafter, PROMPT, config).token_ids
    drafter.reset(PROMPT, _prefill_hidden(target, PROMPT))
    loaded.reset(PROMPT, _prefill_hidden(target, PROMPT))
    ctx = DraftContext(list(PROMPT), SamplingParams(0.0), torch.Generator(), 3)
    mine, theirs = drafter.propose(ctx), loaded.propose(ctx)
    assert (mine.tokens, mine.parents) == (theirs.tokens, theirs.parents) and len(mine) > 0


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    from taskspec.drafters.kinds import build_drafter
    from taskspec.drafters.checkpoint import save_drafter

    target = tiny_llama()
    with pytest.raises(DrafterError, match="missing config.json"):
        build_drafter(f"eagle2:{tmp_path / 'nowhere'}", target)
    save_drafter(random_drafter(target, draft_vocab_size=30), tmp_path / "ok")
    with pytest.raises(DrafterError, match="is a eagle2 drafter"):
        build_drafter(f"hass:{tmp_path / 'ok'}", target)
    with pytest.raises(DrafterError, match="trained for another target"):
        build_drafter(f"eagle2:{tmp_path / 'ok'}", tiny_llama(vocab=50))
    with pytest.raises(DrafterError, match="no eagle2 drafter ships for target"):
        build_drafter("eagle2", target)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path / "ok", corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(DrafterError, match="corrupt weights"):
        build_drafter(f"eagle2:{corrupt}", target)
    (corrupt / "config.json").write_text("{not json")
    with pytest.raises(DrafterError, match="unreadable config"):
        build_drafter(f"eagle2:{corrupt}", target)


@pytest.mark.parametrize("make_target", [tiny_llama, tiny_gemma3], ids=["llama", "gemma3"])
@pytest.mark.parametrize("options, temperature", [(dict(top_k=1, depth=4), 0.0), (dict(top_k=3, depth=4, num_nodes=9), 0.0),
                                                  (dict(top_k=1, depth=3), 1.0)], ids=["chain", "tree", "sampled"])
def test_lean_body_drafts_exactly_what_the_model_forward_drafts(make_target, options, temperature):
    """The direct layer call (the default) against the full Hugging Face forward (reference), over whole decodes:
    the same trees, draft probabilities and outputs, round after round (cache feeding and cropping included)."""
    target = make_target()
    lean = random_drafter(target, kind="hass", draft_vocab_size=64, **options)
    reference = EagleDrafter(lean.model, lean.vocab, target, "hass", lean=False, **options)
    assert type(lean.lm).__name__ == "LeanBody" and type(reference.lm).__name__ == "CausalLM"
    config = GenerationConfig(max_new_tokens=24, sampling=SamplingParams(temperature), seed=5, stop_on_eos=False)
    proposals = {}
    for name, drafter in (("lean", lean), ("reference", reference)):
        trees, propose = [], drafter.propose
        drafter.propose = lambda ctx, propose=propose, trees=trees: trees.append(propose(ctx)) or trees[-1]
        proposals[name] = (generate(target, drafter, PROMPT, config).token_ids, trees)
    (out_a, trees_a), (out_b, trees_b) = proposals["lean"], proposals["reference"]
    assert out_a == out_b and len(trees_a) == len(trees_b) > 3
    for a, b in zip(trees_a, trees_b):
        assert (a.tokens, a.parents) == (b.tokens, b.parents)
        assert (a.draft_probs is None) == (b.draft_probs is None)
        assert a.draft_probs is None or torch.equal(a.draft_probs, b.draft_probs)
