"""Integration on the embedded target (Gemma 3 270M). The first run converts the GGUF once (~1-2 min)."""

from __future__ import annotations

import json

import pytest

from taskspec.bench.runner import run_bench
from taskspec.cli import main
from taskspec.data import Prompt
from taskspec.drafters.ngram import NgramDrafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.engine.drafter import NoDrafter
from taskspec.models.target import load_target

pytestmark = pytest.mark.embedded

REPETITIVE = ("Sorted list: apple, banana, cherry, grape, kiwi, mango\nList: tiger, lion, zebra, bear\n"
              "Sorted list: bear, lion, tiger, zebra\nList: apple, mango, kiwi, banana\nSorted list:")


@pytest.fixture(scope="module")
def target_fp32():
    return load_target("embedded", dtype="fp32")


def test_ngram_equals_none_greedy_fp32(target_fp32):
    config = GenerationConfig(max_new_tokens=32)
    plain = generate(target_fp32, NoDrafter(), REPETITIVE, config)
    spec = generate(target_fp32, NgramDrafter(), REPETITIVE, config)
    assert spec.token_ids == plain.token_ids
    assert sum(spec.stats.accepted_per_depth) > 0, "the n-gram drafter should have had drafts accepted here"
    assert spec.stats.target_steps < plain.stats.target_steps
    assert spec.text == plain.text and spec.text


def test_stop_string_ends_generation(target_fp32):
    result = generate(target_fp32, NgramDrafter(), REPETITIVE,
                      GenerationConfig(max_new_tokens=40, stop_strings=("\n",)))
    assert "\n" in result.text and not result.text.rstrip("\n").count("\n")
    assert result.stats.new_tokens < 40


def test_generate_cli_json(capsys):
    assert main(["generate", "--drafter", "ngram", "--prompt", REPETITIVE, "--max-new-tokens", "8", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"text", "token_ids", "stats"} and len(payload["token_ids"]) == 8
    for key in ("acceptance_length", "target_steps", "new_tokens", "accepted_per_depth", "tokens_per_second", "time"):
        assert key in payload["stats"]


def test_bench_runs_all_methods_side_by_side(target_fp32):
    prompts = [Prompt(id=f"p{i}", text=text, source="demo", meta={}) for i, text in enumerate([REPETITIVE, "2 + 2 ="])]
    methods = ["none", "ngram", "hf-generate", "hf-prompt-lookup"]
    result = run_bench(target_fp32, prompts, methods, GenerationConfig(max_new_tokens=8), progress=False).to_dict()
    table = result["summary"]["all"]
    assert list(table) == methods
    assert table["none"]["speedup"] == 1.0 and table["hf-generate"]["acceptance_length"] == 1.0
    assert table["ngram"]["acceptance_length"] > 1.0
    assert all(row["greedy_match_rate"] is not None for row in table.values())
    assert len(result["runs"]) == len(prompts) * len(methods)


@pytest.fixture(scope="module")
def target_bf16():
    return load_target("embedded", dtype="bf16")


def test_bf16_tree_drafts_equal_plain_greedy_with_invariant_kernels(target_bf16):
    """The batch-invariant kernels make bf16 verification bitwise equal to single steps (docs/architecture.md)."""
    from taskspec.demo_prompts import DEMO_PROMPTS

    if target_bf16.linear_kernel == "torch" or target_bf16.attention_kernel == "sdpa":
        pytest.skip("taskspec's kernels are unavailable here (no AVX2/FMA or no C++ compiler)")
    config = GenerationConfig(max_new_tokens=48)
    accepted = 0
    for _, text in DEMO_PROMPTS[:3]:
        plain = generate(target_bf16, NoDrafter(), text, config)
        spec = generate(target_bf16, NgramDrafter(branches=4), text, config)
        assert spec.token_ids == plain.token_ids
        accepted += sum(spec.stats.accepted_per_depth)
    assert accepted > 0


def test_features_cli_writes_a_resumable_cache(tmp_path, capsys):
    out = tmp_path / "features"
    args = ["features", "--data", "gsm8k:train", "--limit", "2", "--max-tokens", "48", "--examples-per-shard", "1",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 2
    assert all(s["response_tokens"] > 0 for s in manifest["shards"])
    assert main(args) == 0  # a finished cache is left as it is
    assert main([*args[:-3], "--top-k", "5", "--out", str(out)]) == 2  # other settings: a clear error
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["eagle2", "hass"])
def test_shipped_drafters_are_lossless_and_accept_drafts(target_bf16, kind):
    """The drafters committed in src/taskspec/drafters/shipped/ load for the embedded target, keep greedy output
    exactly the target's (bf16, batch-invariant kernels) and get drafts accepted on a math prompt."""
    from taskspec.drafters.kinds import build_drafter
    from taskspec.drafters.shipped import shipped_drafters

    if target_bf16.linear_kernel == "torch" or target_bf16.attention_kernel == "sdpa":
        pytest.skip("taskspec's kernels are unavailable here (no AVX2/FMA or no C++ compiler)")
    assert kind in shipped_drafters(target_bf16), f"no shipped {kind} drafter for the embedded target"
    drafter = build_drafter(kind, target_bf16)
    prompt = "Tom has 3 boxes with 12 pencils each. He gives away 7 pencils. How many pencils does he have left?"
    config = GenerationConfig(max_new_tokens=40)
    plain = generate(target_bf16, NoDrafter(), prompt, config)
    spec = generate(target_bf16, drafter, prompt, config)
    assert spec.token_ids == plain.token_ids
    assert spec.stats.acceptance_length > 1.5, f"{kind}: τ {spec.stats.acceptance_length:.2f} on a math prompt"
    assert build_drafter("auto", target_bf16).name == "auto=ngram+hass"


def test_shipped_drafter_set_routes_and_stays_lossless(target_bf16):
    """The drafter set committed in src/taskspec/drafters/shipped/sets/ (configs/embedded.toml) loads for the embedded
    target, routes a math prompt to its math specialist (the LoRA one through the shipped base drafter) and keeps
    greedy output exactly the target's."""
    from taskspec.tasks.drafter_sets import load_drafter_set
    from taskspec.drafters.shipped import shipped_drafter_set

    folder = shipped_drafter_set(target_bf16)
    assert folder is not None, "no drafter set ships for the embedded target"
    drafter_set = load_drafter_set(folder, target_bf16)
    assert drafter_set.task_names == ["chat", "math"]
    prompt = "A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left?"
    config = GenerationConfig(max_new_tokens=24)
    plain = generate(target_bf16, NoDrafter(), prompt, config)
    for strategy in ("routed", "routed@lora"):
        drafter = drafter_set.compose(strategy)
        assert generate(target_bf16, drafter, prompt, config).token_ids == plain.token_ids, strategy
        assert dict(drafter.choices) == {"math": 1}, (strategy, dict(drafter.choices))
