"""`taskspec build` end to end on a tiny target: tasks from a task map, specialists (heads, LoRA), mixes, routers,
a loadable drafter set whose strategies decode exactly; a rerun resumes instead of retraining."""

from __future__ import annotations

import json

import pytest

from conftest import MATH_PROMPTS, PROSE_PROMPTS, reference_greedy, tiny_task_workspace
from taskspec.drafters.drafter_set import MANIFEST
from taskspec.engine.decode import GenerationConfig, encode_prompt, generate
from taskspec.tasks.drafter_sets import load_drafter_set
from taskspec.train.build import BuildConfig, BuildError, build_drafter_set, prompt_text
from taskspec.train.data import load_feature_dirs

MATH, PROSE = MATH_PROMPTS, PROSE_PROMPTS


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    target, _, _, detector = tiny_task_workspace(root)
    return target, root, detector


CONFIG = BuildConfig(kind="eagle2", generic="train", steps=3, seqs_per_step=2, draft_vocab_size=64, lora_rank=2,
                     routers=("embedding", "target-feature"), min_task_examples=2, save_every=3,
                     options={"depth": 2})


def test_build_makes_a_drafter_set_that_decodes_exactly_and_resumes(workspace):
    target, root, detector = workspace
    math_task = int(detector.predict(MATH[:1])[0])
    names = ["math", "prose"] if math_task == 0 else ["prose", "math"]
    features = [str(root / "f1"), str(root / "f2")]
    out = root / "set"
    manifest = build_drafter_set(target, root / "taskmap.json", features, out, CONFIG, task_names=names,
                                 progress=False, log=lambda m: None)
    assert {t["name"]: t["examples"] for t in manifest["tasks"]} == {"math": 6, "prose": 6}
    assert set(manifest["members"]) == {"generic", "head:math", "head:prose", "lora:math", "lora:prose",
                                        "mixed-small", "mixed-large"}
    assert manifest["specialists"]["lora"] == {"math": "lora:math", "prose": "lora:prose"}
    assert set(manifest["routers"]) == {"embedding", "target-feature"}
    # each specialist trained on its own task's examples only
    head = json.loads((out / "heads" / "math" / "config.json").read_text())
    assert head["examples"]["count"] == 6
    # the routers agree with the task map on the training prompts
    evaluation = json.loads((out / "routers" / "evaluation.json").read_text())
    assert evaluation["target-feature"]["held_out_accuracy"] >= 0.5

    drafter_set = load_drafter_set(out, target)
    prompt = encode_prompt(target, MATH[0])
    expected = reference_greedy(target, prompt, 12)
    for strategy in ("single", "routed", "routed:embedding", "routed@lora", "averaged", "confidence", "merged",
                     "single:mixed-small"):
        drafter = drafter_set.compose(strategy)
        result = generate(target, drafter, prompt, GenerationConfig(max_new_tokens=12, stop_on_eos=False))
        assert result.token_ids == expected, strategy
    routed = drafter_set.compose("routed:target-feature")
    generate(target, routed, prompt, GenerationConfig(max_new_tokens=4, stop_on_eos=False))
    assert sum(routed.choices.values()) == 1

    # a rerun finds every stage complete: the same manifest, no weights rewritten
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = build_drafter_set(target, root / "taskmap.json", features, out, CONFIG, task_names=names,
                              progress=False, log=lambda m: None)
    assert {k: v for k, v in again.items() if k != "build"} == {k: v for k, v in manifest.items() if k != "build"}
    assert stamp == {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert json.loads((out / MANIFEST).read_text())["tasks"] == manifest["tasks"]


def test_prompt_text_is_the_prompt_before_the_response(workspace):
    target, root, _ = workspace
    texts = {prompt_text(target, seq) for group in load_feature_dirs([root / "f1", root / "f2"]) for seq in group}
    assert texts == set(MATH + PROSE)


def test_build_rejects_bad_inputs(workspace):
    target, root, _ = workspace
    features = [str(root / "f1")]
    with pytest.raises(BuildError, match="task-names"):
        build_drafter_set(target, root / "taskmap.json", features, root / "bad", CONFIG, task_names=["only-one"],
                          progress=False, log=lambda m: None)
    with pytest.raises(BuildError, match="mixed-sizes"):
        BuildConfig(mixed_fractions=(0.5, 2.0))
    with pytest.raises(BuildError, match="stages"):
        BuildConfig(stages=("heads", "everything"))
    with pytest.raises(BuildError, match="no task has"):
        build_drafter_set(target, root / "taskmap.json", features, root / "bad2",
                          BuildConfig(generic="train", min_task_examples=100), progress=False, log=lambda m: None)
    from taskspec.tasks.encoders import TaskDetectionError

    with pytest.raises(TaskDetectionError, match="task map"):
        build_drafter_set(target, root / "f1" / "manifest.json", features, root / "bad3", CONFIG, progress=False,
                          log=lambda m: None)


def test_build_and_demo_read_a_task_map_of_the_targets_states(workspace, tmp_path):
    """A map from `detect --encoder target` assigns the build's examples and tags the demo's prompts with the
    target's own prefill states (the same tasks as the map's predict)."""
    from dataclasses import replace

    from taskspec.data import Prompt
    from taskspec.demo import tag_with_tasks
    from taskspec.tasks import TaskDetector

    target, root, _ = workspace
    detector = TaskDetector(encoder="target", k=2, target=target).fit(MATH + PROSE)
    detector.save(tmp_path / "taskmap.json")
    tasks = detector.predict(MATH + PROSE).tolist()
    manifest = build_drafter_set(target, tmp_path / "taskmap.json", [str(root / "f1"), str(root / "f2")],
                                 tmp_path / "set", replace(CONFIG, stages=("heads",), routers=()),
                                 progress=False, log=lambda m: None)
    built = {t["id"]: t["examples"] for t in manifest["tasks"]}
    assert built == {t: tasks.count(t) for t in set(tasks) if tasks.count(t) >= CONFIG.min_task_examples}
    prompts = [Prompt(f"p{i}", text, "mine") for i, text in enumerate(MATH[:2] + PROSE[:2])]
    tagged, _ = tag_with_tasks(prompts, load_drafter_set(tmp_path / "set", target))
    names = {t["id"]: t["name"] for t in manifest["tasks"]}
    assert [p.source for p in tagged] == [names.get(t, f"task{t}") for t in (tasks[:2] + tasks[6:8])]


def test_a_resumed_build_names_damaged_files(workspace, tmp_path, capsys):
    """Issue #15. A resumed build takes the task assignments from assignments.json: a damaged one is recomputed
    (it is a cache); a damaged feature manifest, first read there by the folder counts, exits with code 2 naming it."""
    import shutil

    from taskspec.cli import main

    target, root, _ = workspace
    target.model.save_pretrained(tmp_path / "tiny")
    target.tokenizer.save_pretrained(tmp_path / "tiny")
    for name in ("f1", "f2"):
        shutil.copytree(root / name, tmp_path / name)
    out = tmp_path / "set"
    args = ["build", "--target", str(tmp_path / "tiny"), "--dtype", "fp32", "--taskmap", str(root / "taskmap.json"),
            "--features", f"{tmp_path / 'f1'},{tmp_path / 'f2'}", "--out", str(out), "--generic", "train",
            "--steps", "1", "--seqs-per-step", "1", "--draft-vocab-size", "64", "--stages", "", "--routers", "",
            "--quiet"]
    assert main(args) == 0
    assignments = json.loads((out / "assignments.json").read_text())
    (out / "assignments.json").write_text('{"key": ')
    assert main(args) == 0
    assert json.loads((out / "assignments.json").read_text()) == assignments
    (tmp_path / "f2" / "manifest.json").write_text("{broken")
    capsys.readouterr()
    assert main(args) == 2
    assert f"{tmp_path / 'f2' / 'manifest.json'}: not a JSON file" in capsys.readouterr().err
