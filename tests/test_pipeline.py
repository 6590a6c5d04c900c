"""`taskspec pipeline`: config validation, and the whole run on a tiny target and synthetic prompts, again after a
simulated kill in the middle of the build stage, producing the same drafter set."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import save_tiny_model, tiny_llama_with_tokenizer
from taskspec.cli import main
from taskspec.pipeline import PipelineError, load_config, parse_config, run_pipeline
from taskspec.tasks.drafter_sets import load_drafter_set

MATH = [f"compute {a} plus {b} and then multiply by {c}" for a, b, c in
        ((3, 4, 2), (12, 7, 5), (5, 9, 3), (21, 2, 8), (8, 8, 4), (14, 6, 7), (2, 30, 9), (17, 1, 6), (4, 44, 2),
         (9, 13, 3), (11, 5, 5), (6, 26, 8))]
PROSE = [f"write a short poem about the {w} in the garden at night" for w in
         ("rose", "bird", "rain", "moon", "tree", "cat", "owl", "fox", "wind", "frog", "snail", "lamp")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    model_dir = save_tiny_model(root / "tiny-model")
    prompts = root / "log.jsonl"
    rows = [{"prompt": text} for pair in zip(MATH, PROSE) for text in pair]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, model_dir, prompts


def config_text(model_dir, prompts, out) -> str:
    return f"""
target = "{model_dir}"
dtype = "fp32"
out = "{out}"

[prompts]
sources = ["{prompts}"]
limit = 20
eval_limit = 4

[collect]
max_new_tokens = 6
max_tokens = 64
top_k = 4

[detect]
k = 2
task_names = ["a", "b"]

[build]
generic = "train"
steps = 3
seqs_per_step = 2
save_every = 3
draft_vocab_size = 64
lora_rank = 2
stages = ["heads", "lora", "routers"]
routers = ["target-feature", "embedding"]
drafter_options = {{ depth = 2 }}

[evaluate]
methods = ["none"]
compose = ["single", "routed", "merged"]
max_new_tokens = 8
"""


def _weights(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))}


def test_pipeline_runs_end_to_end_and_resumes_after_a_kill(workspace, monkeypatch, capsys):
    root, model_dir, prompts = workspace
    # an uninterrupted run through the CLI
    path = root / "full.toml"
    path.write_text(config_text(model_dir, prompts, root / "full"))
    assert main(["pipeline", "--config", str(path), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "| routed |" in printed.out and "drafter-set" in printed.out
    full = root / "full"
    summary = json.loads((full / "summary.json").read_text())
    assert set(summary["stages"]) == {"collect", "detect", "features", "build", "evaluate"}
    assert {t["name"] for t in summary["tasks"]} <= {"a", "b"}
    assert {"none", "single", "routed", "merged"} <= set(summary["evaluation"])
    evaluation = json.loads((full / "evaluation.json").read_text())
    assert evaluation["meta"]["prompts"] == 4  # held out, never trained on
    trained = {json.loads(line)["id"] for line in (full / "collect.jsonl").read_text().splitlines()}
    assert len(trained) == 20 and not trained & {r["prompt_id"] for r in evaluation["runs"]}
    # greedy: every strategy's output equals plain decoding
    assert all(v["greedy_match_rate"] == 1.0 for v in evaluation["summary"]["all"].values())

    # the same config into another folder, killed after the second training run of the build stage
    import taskspec.train.build as build_module

    real_train, calls = build_module.train, []

    def killed_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_train(*args, **kwargs)

    config = load_config(path, out=str(root / "killed"))
    monkeypatch.setattr(build_module, "train", killed_train)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, progress=False, log=lambda m: None)
    assert not (root / "killed" / "drafter-set" / "drafterset.json").exists()
    monkeypatch.setattr(build_module, "train", real_train)
    run = run_pipeline(config, progress=False, log=lambda m: None)
    assert run.stages["collect"] == "skipped" and run.stages["build"] == "resumed"
    weights = _weights(full / "drafter-set")
    assert {"generic/model.safetensors", "heads/a/model.safetensors", "lora/b/adapter.safetensors"} <= set(weights)
    assert _weights(root / "killed" / "drafter-set") == weights
    # a third run has nothing to do
    again = run_pipeline(config, progress=False, log=lambda m: None)
    assert set(again.stages.values()) == {"skipped"}
    # the result loads like any drafter set
    target = tiny_llama_with_tokenizer()
    assert load_drafter_set(root / "killed" / "drafter-set", target).compose("routed") is not None


def test_pipeline_refuses_a_folder_made_with_another_config(workspace):
    root, model_dir, prompts = workspace
    path = root / "a.toml"
    path.write_text(config_text(model_dir, prompts, root / "other"))
    config = load_config(path)
    from dataclasses import replace

    out = root / "other"
    out.mkdir()
    (out / "pipeline.json").write_text(json.dumps({"stages": {"collect": {"key": "0000", "done": True}}}))
    with pytest.raises(PipelineError, match="different configuration"):
        run_pipeline(replace(config), progress=False, log=lambda m: None, target=tiny_llama_with_tokenizer())


@pytest.mark.parametrize("text, message", [
    ("target = 'x'\nout = 'o'\n[prompts]\nsources = ['a']\nlimt = 3\n", "unknown key.*prompts.limt"),
    ("out = 'o'\n[prompts]\nsources = ['a']\nlimit = 'many'\n", "prompts.limit.*expected int"),
    ("out = 'o'\n[prompts]\nsources = []\n", "prompts.sources is empty"),
    ("out = 'o'\n[prompts]\nsources = ['a']\n[detect]\nk = 1\n", "detect.k"),
    ("out = 'o'\n[prompts]\nsources = ['a']\n[build]\nkind = 'medusa'\n", "build.kind"),
    ("out = 'o'\n[prompts]\nsources = ['a']\n[build]\nrouters = ['mamba9']\n", "build.routers"),
    ("out = 'o'\n[prompts]\nsources = ['a']\n[build]\nmixed_sizes = [0.5, 3.0]\n", "mixed-sizes"),
    ("out = 'o'\n[prompts]\nsources = ['a']\n[evaluation]\nmethods = ['none']\n", "unknown key.*evaluation"),
    ("out = 'o'\nprompts = 3\n", r"\[prompts\] must be a table"),
])
def test_config_errors_name_the_key(text, message):
    import tomllib

    with pytest.raises(PipelineError, match=message):
        parse_config(tomllib.loads(text), source="c.toml")


def test_config_files(tmp_path):
    with pytest.raises(PipelineError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("out = \n")
    with pytest.raises(PipelineError, match="not valid TOML"):
        load_config(bad)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("prompts:\n  sources: [gsm8k]\n  limit: 5\nbuild:\n  steps: 7\n")
    with pytest.raises(PipelineError, match="no output folder"):
        load_config(yaml_file)
    config = load_config(yaml_file, out=str(tmp_path / "o"))
    assert config.prompts.limit == 5 and config.build.steps == 7 and config.out == str(tmp_path / "o")
    other = tmp_path / "c.ini"
    other.write_text("x")
    with pytest.raises(PipelineError, match="expected a .toml"):
        load_config(other)


def test_the_shipped_example_config_is_valid():
    from pathlib import Path

    config = load_config(Path(__file__).parent.parent / "configs" / "embedded.toml")
    assert config.target == "embedded" and config.prompts.sources


def test_prompts_sample_first_or_random():
    """sample = random draws from the whole source (seeded, reproducible); both modes keep train and held-out
    prompts disjoint and of the asked sizes."""
    from dataclasses import replace

    from taskspec.data.datasets import Prompt
    from taskspec.pipeline import PromptsSection, split_prompts

    rows = [Prompt(id=f"s/{i}", text=f"prompt {i % 90}", source="s") for i in range(100)]  # 10 duplicates at the end

    def fake_load(source, data_dir=None, limit=None):
        return rows[:limit]

    section = PromptsSection(sources=("s",), limit=20, eval_limit=5)
    train, held = split_prompts(section, fake_load)
    assert [p.id for p in train] == [f"s/{i}" for i in range(20)] and [p.id for p in held] == [f"s/{i}" for i in
                                                                                                range(20, 25)]
    random_section = replace(section, sample="random", seed=1)
    train, held = split_prompts(random_section, fake_load)
    texts = [p.text for p in train + held]
    assert len(train) == 20 and len(held) == 5 and len(set(texts)) == 25
    assert max(int(p.id.split("/")[1]) for p in train) > 25  # not just the start of the file
    assert split_prompts(random_section, fake_load)[0] == train  # reproducible
    assert split_prompts(replace(random_section, seed=2), fake_load)[0] != train
    with pytest.raises(PipelineError, match="prompts.sample"):
        parse_config({"out": "o", "prompts": {"sources": ["s"], "sample": "shuffled"}})
