"""Collecting the target's outputs: exact greedy outputs, resume after a kill, torn lines, refused files."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import reference_greedy, tiny_llama_with_tokenizer
from taskspec import collect as collect_module
from taskspec.collect import CollectError, collect, read_records
from taskspec.data import Prompt
from taskspec.engine.decode import GenerationConfig
from taskspec.train.features import examples_from_target

PROMPTS = [Prompt(id=f"p{i}", text=f"Question {i}: what is {i} + {i}?", source="synthetic") for i in range(5)]
CONFIG = GenerationConfig(max_new_tokens=12, stop_on_eos=False)


def _stable(records):
    return [(r["id"], r["prompt"], r["output_ids"], r["meta"]["settings"]) for r in records]


def test_records_hold_the_targets_greedy_output(tmp_path):
    target = tiny_llama_with_tokenizer()
    records = collect(target, PROMPTS[:2], tmp_path / "out.jsonl", config=CONFIG, progress=False)
    assert [r["id"] for r in records] == ["p0", "p1"]
    for prompt, record in zip(PROMPTS, records):
        ids = target.tokenizer(prompt.text, add_special_tokens=True)["input_ids"]
        assert record["output_ids"] == reference_greedy(target, ids, 12)
        assert record["output"] == target.tokenizer.decode(record["output_ids"], skip_special_tokens=True)
        assert record["meta"]["source"] == "synthetic" and record["meta"]["new_tokens"] == 12
    assert read_records(tmp_path / "out.jsonl") == records


def test_resume_after_kill_and_torn_line_has_no_duplicates_or_loss(tmp_path, monkeypatch, caplog):
    target = tiny_llama_with_tokenizer()
    whole = collect(target, PROMPTS, tmp_path / "whole.jsonl", config=CONFIG, progress=False)

    real, calls = collect_module.generate, [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    path = tmp_path / "resumed.jsonl"
    monkeypatch.setattr(collect_module, "generate", dying)
    with pytest.raises(KeyboardInterrupt):
        collect(target, PROMPTS, path, config=CONFIG, progress=False)
    assert [r["id"] for r in read_records(path)] == ["p0", "p1"]
    with open(path, "a") as fh:  # a record cut short by the kill
        fh.write('{"id": "p2", "prompt": "Quest')
    monkeypatch.setattr(collect_module, "generate", real)
    with caplog.at_level(logging.WARNING):
        resumed = collect(target, PROMPTS, path, config=CONFIG, progress=False)
    assert "torn" in caplog.text
    assert _stable(resumed) == _stable(whole)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p0", "p1", "p2", "p3", "p4"]


def test_nothing_is_decoded_again_once_collected(tmp_path, monkeypatch):
    target = tiny_llama_with_tokenizer()
    path = tmp_path / "out.jsonl"
    first = examples_from_target(target, PROMPTS, 64, 12, path, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("a collected prompt was decoded again")

    monkeypatch.setattr(collect_module, "generate", forbidden)
    assert examples_from_target(target, PROMPTS + PROMPTS[:1], 64, 12, path, progress=False) == first
    assert len(first) == 5 and all(len(e.response_ids) == 12 for e in first)


def test_other_settings_or_target_are_refused_and_the_file_is_kept(tmp_path):
    target = tiny_llama_with_tokenizer()
    path = tmp_path / "out.jsonl"
    collect(target, PROMPTS[:2], path, config=CONFIG, progress=False)
    before = path.read_bytes()
    with pytest.raises(CollectError, match="max_new_tokens"):
        collect(target, PROMPTS, path, config=GenerationConfig(max_new_tokens=5), progress=False)
    with pytest.raises(CollectError, match="target"):
        collect(tiny_llama_with_tokenizer(seed=1), PROMPTS, path, config=CONFIG, progress=False)
    assert path.read_bytes() == before


def test_damaged_middle_line_and_empty_prompt_list(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "prompt": "x", "output": "y", "output_ids": [1], "meta": {}}\nnot json\n{}\n')
    with pytest.raises(CollectError, match=r"out.jsonl:2: not a collected record"):
        read_records(path)
    with pytest.raises(CollectError, match="no prompts"):
        collect(tiny_llama_with_tokenizer(), [], tmp_path / "new.jsonl", config=CONFIG, progress=False)


def test_a_prompt_the_target_cannot_take_is_skipped_with_a_warning(tmp_path, caplog):
    target = tiny_llama_with_tokenizer()
    too_long = Prompt(id="long", text="x" * 600, source="synthetic")  # the tiny target has 512 positions
    with caplog.at_level(logging.WARNING):
        records = collect(target, [PROMPTS[0], too_long, PROMPTS[1]], tmp_path / "out.jsonl", config=CONFIG,
                          progress=False)
    assert [r["id"] for r in records] == ["p0", "p1"] and "skipping prompt long" in caplog.text
    examples = examples_from_target(target, [PROMPTS[0], too_long], 64, 12, tmp_path / "out.jsonl", progress=False)
    assert [e.id for e in examples] == ["p0"]
