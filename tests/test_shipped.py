"""Shipped drafters are found by target fingerprint; `auto` picks HASS, then EAGLE-2, else prompt lookup."""

from __future__ import annotations

import pytest
import torch

from conftest import PROMPT, tiny_gemma3, tiny_llama
from taskspec.drafters.checkpoint import save_drafter
from taskspec.drafters.eagle import random_drafter
from taskspec.drafters.kinds import build_drafter
from taskspec.drafters.shipped import auto_drafter_spec, shipped_drafters
from taskspec.errors import DrafterError


def test_auto_is_prompt_lookup_for_a_target_nothing_ships_for():
    target = tiny_llama()
    assert auto_drafter_spec(target) == "ngram"
    assert build_drafter("auto", target).name == "auto=ngram"
    with pytest.raises(DrafterError, match="no hass drafter ships for target"):
        build_drafter("hass", target)
    with pytest.raises(DrafterError, match="unknown option"):
        build_drafter("auto:depth=3", target)


def test_shipped_drafters_match_their_target_and_auto_prefers_hass(tmp_path):
    llama, gemma = tiny_llama(), tiny_gemma3()
    save_drafter(random_drafter(llama, kind="eagle2", draft_vocab_size=30), tmp_path / "eagle2-llama")
    assert shipped_drafters(llama, tmp_path) == {"eagle2": tmp_path / "eagle2-llama"}
    assert auto_drafter_spec(llama, tmp_path) == f"ngram+eagle2:{tmp_path / 'eagle2-llama'}"
    save_drafter(random_drafter(llama, kind="hass", draft_vocab_size=30), tmp_path / "hass-llama")
    assert auto_drafter_spec(llama, tmp_path) == f"ngram+hass:{tmp_path / 'hass-llama'}"
    assert shipped_drafters(tiny_llama(vocab=50), tmp_path) == {}  # another vocabulary: nothing fits
    assert auto_drafter_spec(gemma, tmp_path) == "ngram"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{oops")  # skipped, not fatal
    assert set(shipped_drafters(llama, tmp_path)) == {"eagle2", "hass"}


def test_drafter_uses_the_bf16_kernel_when_its_target_does():
    from taskspec.kernels import kernel_available, patch_linears

    if not kernel_available():
        pytest.skip("bf16 kernel unavailable on this CPU")
    target = tiny_llama()
    target.model.to(torch.bfloat16)
    target.dtype = torch.bfloat16
    assert patch_linears(target.model) > 0
    target.linear_kernel = "taskspec-bf16"
    drafter = random_drafter(target, draft_vocab_size=40)
    assert drafter.use_kernel
    hidden = torch.randn(5, target.hidden_size).to(torch.bfloat16)
    reference = (hidden @ drafter.head_weight.T).float()  # plain torch path
    assert torch.allclose(drafter.logits(hidden), reference, rtol=2e-2, atol=2e-2)
    drafter.reset(PROMPT)
    assert type(drafter.model.fc).__name__ == "Bf16Linear"


@pytest.mark.parametrize("spec, parsed", [
    ("hass", ("hass", "", {})),
    ("hass,depth=3,top_k=1", ("hass", "", {"depth": "3", "top_k": "1"})),
    ("hass:depth=3", ("hass", "", {"depth": "3"})),
    ("eagle2:runs/d,num_nodes=8", ("eagle2", "runs/d", {"num_nodes": "8"})),
    ("model:some/model", ("model", "some/model", {})),
])
def test_drafter_specs_take_options_after_a_colon_or_a_comma(spec, parsed):
    from taskspec.drafters.registry import split_spec

    assert split_spec(spec) == parsed


@pytest.mark.parametrize("make_target", [tiny_llama, tiny_gemma3], ids=["llama", "gemma3"])
def test_lookup_then_feature_drafter_keeps_greedy_output_and_uses_both(make_target, tmp_path):
    from conftest import reference_greedy
    from taskspec.engine.decode import GenerationConfig, generate

    target = make_target()
    save_drafter(random_drafter(target, kind="hass", draft_vocab_size=40), tmp_path / "hass")
    drafter = build_drafter(f"ngram+hass:{tmp_path / 'hass'},min_ngram=2,top_k=3,depth=3,num_nodes=6", target)
    assert drafter.name == "ngram+hass" and drafter.needs_target_hidden
    repetitive = (PROMPT * 3)[:40]
    for prompt in (PROMPT, repetitive):
        result = generate(target, drafter, prompt, GenerationConfig(max_new_tokens=24, stop_on_eos=False))
        assert result.token_ids == reference_greedy(target, prompt, 24)
    assert all(drafter.proposals), f"both drafters should have proposed: {drafter.proposals}"


def test_shipped_weights_fit_the_budget_and_hold_no_training_state():
    """Everything shipped in the package (generic drafters + drafter sets) stays within 60 MB of weights (issue #5),
    without resume state, and every member a shipped set names is there."""
    import json

    from taskspec.drafters.shipped import SHIPPED_DIR

    weights = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*.safetensors"))
    assert 0 < weights <= 60e6, f"shipped weights {weights / 1e6:.1f} MB; the budget is 60 MB"
    assert not list(SHIPPED_DIR.rglob("train_state.pt"))
    for manifest_path in SHIPPED_DIR.glob("sets/*/drafterset.json"):
        manifest = json.loads(manifest_path.read_text())
        for member, folder in manifest["members"].items():
            if folder.startswith("shipped:"):  # a shipped generic drafter of that kind
                assert any(SHIPPED_DIR.glob(f"{folder.removeprefix('shipped:')}-*/config.json")), member
            else:
                assert not folder.startswith("/") and (manifest_path.parent / folder / "config.json").is_file(), member
        for kind, path in manifest.get("routers", {}).items():
            assert (manifest_path.parent / path).is_file(), kind
