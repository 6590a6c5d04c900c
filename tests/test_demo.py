"""`taskspec demo` on a tiny target and drafter set: prompts tagged by detected task, one table per task, a report
folder; the prompt sample; the shipped drafter set is found by target fingerprint."""

from __future__ import annotations

import json

import pytest

from conftest import MATH_PROMPTS, PROSE_PROMPTS, tiny_llama, tiny_task_workspace
from taskspec.data import Prompt
from taskspec.demo import SET_METHODS, demo_prompts, run_demo
from taskspec.drafters.checkpoint import target_fingerprint
from taskspec.drafters.drafter_set import load_drafter_set
from taskspec.drafters.shipped import shipped_drafter_set
from taskspec.engine.decode import GenerationConfig
from taskspec.train.build import BuildConfig, build_drafter_set


@pytest.fixture(scope="module")
def drafter_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    target, features, taskmap, detector = tiny_task_workspace(root)
    math_task = int(detector.predict(MATH_PROMPTS[:1])[0])
    names = ["math", "prose"] if math_task == 0 else ["prose", "math"]
    config = BuildConfig(generic="train", steps=3, seqs_per_step=2, draft_vocab_size=64, stages=("heads", "routers"),
                         routers=("target-feature",), min_task_examples=2, save_every=3, options={"depth": 2})
    build_drafter_set(target, taskmap, features, root / "set", config, task_names=names, progress=False,
                      log=lambda m: None)
    return load_drafter_set(root / "set", target)


def test_demo_makes_one_table_per_task_and_a_report(drafter_set, tmp_path, capsys):
    prompts = [Prompt(id=f"p{i}", text=t, source="mine", meta={}) for i, t in
               enumerate([MATH_PROMPTS[0], PROSE_PROMPTS[1], MATH_PROMPTS[2]])]
    logs = []
    result = run_demo(drafter_set.target, prompts, list(SET_METHODS), GenerationConfig(max_new_tokens=8),
                      tmp_path / "demo", drafter_set=drafter_set, progress=False, log=logs.append)
    printed = capsys.readouterr().out
    assert "**math**" in printed and "**prose**" in printed  # the bench tables, grouped by detected task
    assert set(result["summary"]) == {"all", "math", "prose"}
    assert result["summary"]["math"]["none"]["prompts"] == 2
    assert all(v["greedy_match_rate"] == 1.0 for v in result["summary"]["all"].values())
    assert {p["task"] for p in result["prompt_map"]} == {"math", "prose"}
    assert {p["dataset"] for p in result["prompt_map"]} == {"mine"}
    assert any("math: 2 prompts (mine)" in line for line in logs)
    saved = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert saved["summary"] == result["summary"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "prompt_map.png" in report and (tmp_path / "demo" / "prompt_map.png").stat().st_size > 0


def test_demo_prompts_sample_every_available_source(tmp_path):
    logs = []
    prompts = demo_prompts(data_dir=tmp_path / "no-data", log=logs.append)  # ShareGPT ships as a package
    sources = {p.source for p in prompts}
    assert "sharegpt" in sources and "demo" in sources  # the built-in examples stand in for the benchmarks
    assert any("not found: gsm8k" in line for line in logs)
    assert all(len(p.text) <= 600 for p in prompts if p.source == "sharegpt")
    assert demo_prompts(data_dir=tmp_path / "no-data", log=logs.append) == prompts  # a fixed sample


def test_shipped_drafter_set_is_found_by_target(tmp_path):
    target, other = tiny_llama(0), tiny_llama(1, vocab=120)
    assert shipped_drafter_set(target, root=tmp_path) is None
    for name, owner in (("a-other", other), ("b-mine", target)):
        (tmp_path / "sets" / name).mkdir(parents=True)
        (tmp_path / "sets" / name / "drafterset.json").write_text(json.dumps({"target": target_fingerprint(owner)}))
    assert shipped_drafter_set(target, root=tmp_path) == tmp_path / "sets" / "b-mine"
    assert shipped_drafter_set(other, root=tmp_path) == tmp_path / "sets" / "a-other"
