"""Integration on the embedded target (Gemma 3 270M). The first run converts the GGUF once (~1-2 min)."""

from __future__ import annotations

import json

import pytest

from taskspec.bench.runner import run_bench
from taskspec.cli import main
from taskspec.data import Prompt
from taskspec.drafters import NgramDrafter, NoDrafter
from taskspec.engine.decode import GenerationConfig, generate
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
