"""Composed drafters (drafters/compose.py) and drafter sets (drafters/drafter_set.py): greedy exactness, the
routing choices, merged trees with duplicates, checkpoint averaging, and a set's manifest checks.

Distribution tests at T=1 for every strategy live in test_lossless_compositions.py."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import PROMPT, reference_greedy, tiny_llama
from taskspec.drafters.checkpoint import save_drafter
from taskspec.drafters.compose import (MergedTreeDrafter, PromptRoutedDrafter, ScoreRoutedDrafter, averaged_drafter,
                                       merge_trees)
from taskspec.drafters.drafter_set import MANIFEST
from taskspec.drafters.eagle import random_drafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.tree import DraftTree
from taskspec.errors import DrafterError
from taskspec.models.cache import new_cache
from taskspec.models.fingerprint import target_fingerprint
from taskspec.tasks.drafter_sets import load_drafter_set

NEW = 24


def specialists(target, seeds=(1, 2), **options):
    options = {"depth": 3, "top_k": 1, **options}
    return [random_drafter(target, kind="eagle2", draft_vocab_size=64, seed=s, **options) for s in seeds]


def greedy(target, drafter, prompt=PROMPT):
    return generate(target, drafter, prompt, GenerationConfig(max_new_tokens=NEW, stop_on_eos=False))


# ---- merged trees ---------------------------------------------------------------------------------------------------
def test_merge_trees_keeps_every_path_and_folds_duplicates():
    a = DraftTree((5, 6, 7, 9), (-1, 0, 1, 0))  # 5→6→7, 5→9
    b = DraftTree((5, 6, 8), (-1, 0, 1))  # 5→6→8 shares 5→6 with a
    merged = merge_trees([a, b, a])
    paths = {tuple(merged.tokens[n] for n in merged.path_to(leaf)) for leaf in merged.leaves()}
    assert paths == {(5, 6, 7), (5, 9), (5, 6, 8)}
    assert len(merged) == 5  # 5, 6, 7, 9, 8: duplicates merged
    with pytest.raises(DrafterError, match="sampled"):
        merge_trees([DraftTree.chain([1, 2], torch.full((2, 4), 0.25))])


@pytest.mark.parametrize("options", [{"depth": 3, "top_k": 1}, {"depth": 3, "top_k": 2, "num_nodes": 5}],
                         ids=["chains", "trees"])
def test_merged_drafter_is_exact_at_greedy_and_merges_duplicates(options):
    target = tiny_llama()
    expected = reference_greedy(target, PROMPT, NEW)
    drafter = MergedTreeDrafter(specialists(target, (1, 2, 1), **options), ["a", "b", "a-again"])
    result = greedy(target, drafter)
    assert result.token_ids == expected
    assert drafter.merged_nodes > 0  # the third member duplicates the first: identical paths folded
    single = greedy(target, specialists(target, (1,), **options)[0])
    assert result.stats.draft_nodes > single.stats.draft_nodes  # the second member adds candidates


def test_merged_drafter_drafts_deterministically_at_temperature_one():
    from taskspec.engine.sampling import SamplingParams

    target = tiny_llama()
    drafter = MergedTreeDrafter(specialists(target), ["a", "b"])
    assert all(m.deterministic for m in drafter.members)
    config = GenerationConfig(max_new_tokens=12, sampling=SamplingParams(1.0), seed=3, stop_on_eos=False)
    assert generate(target, drafter, PROMPT, config).token_ids == generate(target, drafter, PROMPT, config).token_ids


# ---- routing by draft scores ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["confidence", "entropy"])
@pytest.mark.parametrize("per_step", [False, True], ids=["per-request", "per-step"])
def test_score_routing_is_exact_and_picks_by_the_score(score, per_step):
    target = tiny_llama()
    members = specialists(target)
    drafter = ScoreRoutedDrafter(members, ["a", "b"], score, per_step=per_step)
    assert greedy(target, drafter).token_ids == reference_greedy(target, PROMPT, NEW)
    counts = drafter.choices
    if per_step:  # one choice per verification step
        assert sum(counts.values()) >= NEW // 4
    else:  # the choice is the member with the better first-step score on the prompt
        from taskspec.engine.drafter import DraftContext
        from taskspec.engine.decode import encode_prompt
        from taskspec.engine.sampling import SamplingParams

        fresh = specialists(target)
        ids = encode_prompt(target, PROMPT)
        out = target.forward(torch.tensor(ids), new_cache(), logit_rows=slice(-1, None), want_hidden=True)
        first = int(out.logits[-1].argmax())
        context = DraftContext([*ids, first], SamplingParams(), torch.Generator(), 8)
        scores = []
        for m in fresh:
            m.reset(ids, out.hidden[:-1])
            m.observe([first], out.hidden[-1:])
            scores.append(m.draft_scores(context))
        pick = max(range(2), key=lambda i: scores[i][0]) if score == "confidence" else \
            min(range(2), key=lambda i: scores[i][1])
        assert dict(counts) == {["a", "b"][pick]: 1}


def test_draft_scores_are_probabilities_and_entropies():
    import math

    from taskspec.engine.drafter import DraftContext
    from taskspec.engine.sampling import SamplingParams

    target = tiny_llama()
    drafter = specialists(target, (1,))[0]
    ids = list(PROMPT)
    out = target.forward(torch.tensor(ids), new_cache(), logit_rows=slice(-1, None), want_hidden=True)
    drafter.reset(ids, out.hidden[:-1])
    drafter.observe([5], out.hidden[-1:])
    context = DraftContext([*ids, 5], SamplingParams(), torch.Generator(), 8)
    one, three = drafter.draft_scores(context, 1), drafter.draft_scores(context, 3)
    for confidence, entropy in (one, three):
        assert 1 / 64 <= confidence <= 1 and 0 <= entropy <= math.log(64) + 1e-5
    assert drafter.draft_scores(context, 1) == one  # scoring leaves the drafter's cache as it was
    # the root distribution's own numbers
    logp = torch.log_softmax(drafter.root_prediction(context.tokens)[1], -1)
    assert one[0] == pytest.approx(float(logp.max().exp()))
    assert one[1] == pytest.approx(float(-(logp.exp() * logp).sum()), rel=1e-5)
    # and drafting after scoring proposes what a fresh drafter proposes
    fresh = specialists(target, (1,))[0]
    fresh.reset(ids, out.hidden[:-1])
    fresh.observe([5], out.hidden[-1:])
    assert drafter.propose(context).tokens == fresh.propose(context).tokens


# ---- routing by prompt ----------------------------------------------------------------------------------------------
def test_prompt_routing_replays_the_prefill_into_the_chosen_member():
    target = tiny_llama()
    seen = {}

    def choose(prompt_ids, prompt_hidden):
        seen["ids"], seen["hidden"] = prompt_ids, prompt_hidden
        return "b"

    drafter = PromptRoutedDrafter(specialists(target), ["a", "b"], choose, wants_hidden=True)
    routed = greedy(target, drafter)
    alone = greedy(target, specialists(target)[1])  # what member b does on its own
    assert routed.token_ids == alone.token_ids == reference_greedy(target, PROMPT, NEW)
    assert routed.stats.acceptance_length == alone.stats.acceptance_length
    assert seen["ids"] == PROMPT and seen["hidden"].shape == (len(PROMPT), target.hidden_size)
    assert dict(drafter.choices) == {"b": 1}
    # an unknown task falls back to the named member
    fallback = PromptRoutedDrafter(specialists(target), ["a", "b"], lambda *_: "zzz", fallback="b")
    greedy(target, fallback)
    assert dict(fallback.choices) == {"b": 1}


# ---- checkpoint averaging -------------------------------------------------------------------------------------------
def test_averaged_drafter_is_the_mean_of_the_weights_and_refuses_other_vocabularies():
    target = tiny_llama()
    a, b = specialists(target)
    mean = averaged_drafter([a, b])
    for key, value in mean.model.state_dict().items():
        expected = (a.model.state_dict()[key].float() + b.model.state_dict()[key].float()) / 2
        torch.testing.assert_close(value.float(), expected, rtol=0, atol=1e-6)
    assert greedy(target, mean).token_ids == reference_greedy(target, PROMPT, NEW)
    other = random_drafter(target, kind="eagle2", draft_vocab_size=32, seed=3)
    with pytest.raises(DrafterError, match="vocabulary"):
        averaged_drafter([a, other])


# ---- drafter sets ---------------------------------------------------------------------------------------------------
def make_set(tmp_path, target):
    """A hand-written drafter set: a generic drafter and two head specialists (no routers)."""
    folder = tmp_path / "set"
    for name, seed in (("generic", 0), ("heads/a", 1), ("heads/b", 2)):
        save_drafter(random_drafter(target, kind="eagle2", draft_vocab_size=64, seed=seed), folder / name)
    manifest = {"format": "taskspec-drafter-set", "version": 1, "target": target_fingerprint(target),
                "kind": "eagle2", "tasks": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}],
                "members": {"generic": "generic", "head:a": "heads/a", "head:b": "heads/b"}, "generic": "generic",
                "specialists": {"head": {"a": "head:a", "b": "head:b"}}, "routers": {}, "default_router": None,
                "options": {"depth": 4}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("strategy", ["single", "single:head:b", "averaged", "confidence", "entropy:step", "merged",
                                      "merged-double", "ngram+confidence", "ngram+merged"])
def test_every_strategy_of_a_set_decodes_exactly(tmp_path, strategy):
    target = tiny_llama()
    drafter_set = load_drafter_set(make_set(tmp_path, target), target)
    drafter = drafter_set.compose(strategy)
    assert drafter.name == strategy
    assert greedy(target, drafter).token_ids == reference_greedy(target, PROMPT, NEW)
    if strategy.startswith("ngram+"):  # prompt lookup in front of the composed drafter
        assert drafter.first.name.startswith("ngram") and drafter.second.name == strategy.removeprefix("ngram+")
        assert sum(drafter.proposals) > 0


def test_merged_budgets_split_or_double_the_nodes(tmp_path):
    target = tiny_llama()
    drafter_set = load_drafter_set(make_set(tmp_path, target), target)  # options: depth 4 chains
    assert [m.depth for m in drafter_set.compose("merged").members] == [2, 2]  # equal budget: 4 nodes in all
    assert [m.depth for m in drafter_set.compose("merged-double").members] == [4, 4]
    assert drafter_set.compose("single").depth == 4


def test_drafter_set_refuses_another_target_and_bad_strategies(tmp_path):
    target = tiny_llama()
    folder = make_set(tmp_path, target)
    with pytest.raises(DrafterError, match="another target"):
        load_drafter_set(folder, tiny_llama(seed=0, vocab=50))
    drafter_set = load_drafter_set(folder, target)
    for bad, message in (("fastest", "unknown composition strategy"), ("merged@nope", "family"),
                         ("routed:sequence", "no 'sequence' router"), ("single:head:zzz", "no member"),
                         ("averaged@lora", "no lora specialists"), ("confidence:often", "confidence:step")):
        with pytest.raises(DrafterError, match=message):
            drafter_set.compose(bad)
    with pytest.raises(DrafterError, match="no drafterset.json"):
        load_drafter_set(tmp_path, target)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(DrafterError, match="unreadable manifest"):
        load_drafter_set(folder, target)


def test_a_set_routes_with_the_router_loader_its_caller_hands_in(tmp_path):
    """drafters/ does not import tasks/: the router comes from the caller (tasks/drafter_sets.py in the library)."""
    from taskspec.drafters.drafter_set import DrafterSet

    class RouteToB:  # a router that reads the target's prefill states
        def predict_from_hidden(self, hidden):  # hidden: [len(prompt), hidden]
            return 1, 1.0

    target = tiny_llama()
    folder = make_set(tmp_path, target)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "routers": {"fixed": "routers/fixed.json"}}))
    with pytest.raises(DrafterError, match="without a router loader"):
        DrafterSet.load(folder, target).compose("routed:fixed")
    asked = []
    drafter_set = DrafterSet.load(folder, target, load_router=lambda path, t: asked.append((path, t)) or RouteToB())
    drafter = drafter_set.compose("routed:fixed")
    assert asked == [(folder / "routers" / "fixed.json", target)]
    assert greedy(target, drafter).token_ids == reference_greedy(target, PROMPT, NEW)
    assert dict(drafter.choices) == {"b": 1}


def test_bench_runs_strategies_side_by_side_and_reports_the_routing_split(tmp_path):
    from conftest import tiny_llama_with_tokenizer
    from taskspec.bench.report import markdown_tables
    from taskspec.bench.runner import run_bench
    from taskspec.data import Prompt

    target = tiny_llama_with_tokenizer()
    drafter_set = load_drafter_set(make_set(tmp_path, target), target)
    prompts = [Prompt(id=f"p{i}", text=text, source=source, meta={})
               for i, (text, source) in enumerate([("add 3 and 4", "math"), ("a poem", "chat"), ("7 + 8", "math")])]
    result = run_bench(target, prompts, ["none", "single", "confidence", "merged", "ngram+confidence"],
                       GenerationConfig(max_new_tokens=8, stop_on_eos=False), progress=False,
                       drafter_set=drafter_set).to_dict()
    table = result["summary"]["all"]
    assert all(table[m]["greedy_match_rate"] == 1.0 for m in ("single", "confidence", "merged"))
    assert sum(table["confidence"]["routing"].values()) == 3  # one choice per request
    assert sum(result["summary"]["math"]["confidence"]["routing"].values()) == 2
    assert "routing" not in table["single"]
    assert table["ngram+confidence"]["greedy_match_rate"] == 1.0
    # prompt lookup drafts whenever the text repeats; the specialists are chosen (and counted) only when it does not
    assert sum(table["ngram+confidence"]["routing"].values()) <= 3
    assert "routing split" in markdown_tables(result)
