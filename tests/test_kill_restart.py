"""Real kills: each long stage (collect, features, train, pipeline) runs `taskspec` in a child process that gets
SIGKILL once its first progress is on disk; the restarted command ends with exactly what an uninterrupted run
writes, nothing duplicated, and does not start over.

The child is taskspec.cli.main with one function slowed down (a sleep before each call), so that the kill lands in
the middle of the stage however fast the machine is; the test polls the disk for progress, with a timeout."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import save_tiny_model
from taskspec import collect as collect_module
from taskspec.cli import main
from taskspec.drafters.checkpoint import readable_folder
from taskspec.train import features as features_module
from taskspec.train import trainer as trainer_module

CHILD = """
import importlib, sys, time
module, attribute, delay, *argv = sys.argv[1:]
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)

def slowed(*args, **kwargs):
    time.sleep(float(delay))
    return real(*args, **kwargs)

setattr(owner, name, slowed)
from taskspec.cli import main
sys.exit(main(argv))
"""
MATH = [f"compute {a} plus {b} and then multiply by {c}" for a, b, c in
        ((3, 4, 2), (12, 7, 5), (5, 9, 3), (21, 2, 8), (8, 8, 4), (14, 6, 7))]
PROSE = [f"write a short poem about the {w} in the garden at night" for w in
         ("rose", "bird", "rain", "moon", "tree", "cat")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The child runs on one thread (OMP_NUM_THREADS=1), and so does the test: the same arithmetic on both sides,
    and tiny models on a busy machine run many times faster without threads waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(root, tiny model folder, prompt file with responses): the target every command loads."""
    root = tmp_path_factory.mktemp("kill")
    model_dir = save_tiny_model(root / "tiny-model")
    prompts = root / "prompts.jsonl"
    rows = [{"prompt": text, "response": f" answer {i} " * 3} for i, text in
            enumerate(text for pair in zip(MATH, PROSE) for text in pair)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, model_dir, prompts


def run_and_kill(folder, slow: tuple[str, str, float], argv: list[str], progressed, timeout: float = 120.0) -> None:
    """Run `taskspec argv` in a child with `slow` = (module, attribute, seconds) delayed, SIGKILL it as soon as
    progressed() is true, and check that it was killed, not finished."""
    log = folder / "child.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TASKSPEC_NO_KERNEL": "1",
           "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, slow), *argv], stdout=out,
                                 stderr=subprocess.STDOUT, cwd=folder, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not progressed():
            if child.poll() is not None:
                pytest.fail(f"the child ended ({child.returncode}) before any progress:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no progress on disk after {timeout} s:\n{log.read_text()}")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, f"the child finished before the kill:\n{log.read_text()}"


def complete_lines(path) -> int:
    """Lines of a file the child may be renaming at this moment (0 when it is not there)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def counting(monkeypatch, owner, name: str, when=lambda: True) -> list[int]:
    """Count the calls of owner.name (those for which when() holds) during the test."""
    real, calls = getattr(owner, name), [0]

    def counted(*args, **kwargs):
        calls[0] += bool(when())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_collect_killed_and_restarted(workspace, tmp_path, monkeypatch):
    root, model_dir, prompts = workspace
    out = tmp_path / "collect.jsonl"

    def command(path):
        return ["collect", "--target", str(model_dir), "--dtype", "fp32", "--prompts", str(prompts),
                "--max-new-tokens", "12", "--out", str(path), "--quiet"]

    run_and_kill(tmp_path, ("taskspec.collect", "generate", 0.3), command(out), lambda: complete_lines(out) >= 2)
    done = complete_lines(out)
    decoded = counting(monkeypatch, collect_module, "generate")
    assert main(command(out)) == 0
    assert decoded[0] == 12 - done  # only the prompts without a record
    assert main(command(tmp_path / "whole.jsonl")) == 0

    def records(path):
        return [(r["id"], r["output_ids"], r["meta"]["settings"]) for r in map(json.loads, path.open())]

    assert records(out) == records(tmp_path / "whole.jsonl")  # every line whole, each prompt once, same outputs
    assert len({r[0] for r in records(out)}) == 12


def test_features_killed_and_restarted(workspace, tmp_path, monkeypatch):
    root, model_dir, prompts = workspace
    out = tmp_path / "features"

    def command(folder):
        return ["features", "--target", str(model_dir), "--dtype", "fp32", "--data", str(prompts), "--source",
                "dataset", "--max-tokens", "64", "--top-k", "4", "--examples-per-shard", "2", "--out", str(folder),
                "--quiet"]

    def shards_listed() -> list[int]:
        try:
            return [s["index"] for s in json.loads((out / "manifest.json").read_text())["shards"]]
        except (OSError, ValueError):
            return []

    run_and_kill(tmp_path, ("taskspec.train.features", "example_features", 0.2), command(out),
                 lambda: len(shards_listed()) >= 1)
    done = len(shards_listed())
    extracted = counting(monkeypatch, features_module, "example_features")
    assert main(command(out)) == 0
    assert extracted[0] == 12 - 2 * done  # finished shards are kept, not extracted again
    assert main(command(tmp_path / "whole")) == 0
    assert shards_listed() == list(range(6))  # each shard once
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    for index in range(6):
        a = load_file(str(out / f"shard-{index:05d}.safetensors"))
        b = load_file(str(tmp_path / "whole" / f"shard-{index:05d}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def feature_folder(workspace):
    root, model_dir, prompts = workspace
    folder = root / "features"
    assert main(["features", "--target", str(model_dir), "--dtype", "fp32", "--data", str(prompts), "--source",
                 "dataset", "--max-tokens", "64", "--top-k", "4", "--examples-per-shard", "4", "--out", str(folder),
                 "--quiet"]) == 0
    return folder


def test_train_killed_and_restarted(workspace, feature_folder, tmp_path, monkeypatch):
    root, model_dir, _ = workspace
    out = tmp_path / "ckpt"

    def command(folder):
        return ["train", "--target", str(model_dir), "--dtype", "fp32", "--features", str(feature_folder), "--kind",
                "hass", "--hca-passes", "2", "--steps", "8", "--seqs-per-step", "2", "--warmup-steps", "1",
                "--save-every", "2", "--eval-every", "4", "--draft-vocab-size", "40", "--out", str(folder), "--quiet"]

    def saved_step() -> int:
        return complete_lines(readable_folder(out) / "train_log.jsonl")  # one line per step, written with a save

    run_and_kill(tmp_path, ("taskspec.train.trainer", "DraftLoss.__call__", 0.1), command(out),
                 lambda: saved_step() >= 2)
    saved = saved_step()
    assert 2 <= saved < 8
    trained = counting(monkeypatch, trainer_module.DraftLoss, "__call__", when=torch.is_grad_enabled)
    assert main(command(out)) == 0
    assert trained[0] == (8 - saved) * 2  # resumed from the last checkpoint, not from step 0
    assert main(command(tmp_path / "whole")) == 0
    assert (out / "train_log.jsonl").read_text() == (tmp_path / "whole" / "train_log.jsonl").read_text()
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.log", "ckpt", "whole"]  # no .old, no temporary


PIPELINE = """
target = "{model_dir}"
dtype = "fp32"
out = "{out}"

[prompts]
sources = ["{prompts}"]
limit = 12
eval_limit = 0

[collect]
max_new_tokens = 6
max_tokens = 64
top_k = 4

[detect]
k = 2
encoder = "target"

[build]
generic = "train"
steps = 4
seqs_per_step = 2
save_every = 2
draft_vocab_size = 40
stages = ["heads"]
routers = []
"""


def test_pipeline_killed_in_the_build_and_restarted(workspace, tmp_path, monkeypatch):
    root, model_dir, prompts = workspace

    def config(name):
        path = tmp_path / f"{name}.toml"
        path.write_text(PIPELINE.format(model_dir=model_dir, out=tmp_path / name, prompts=prompts))
        return ["pipeline", "--config", str(path), "--quiet"]

    drafter_set = tmp_path / "killed" / "drafter-set"
    def checkpointed() -> bool:
        try:
            return any(drafter_set.glob("**/train_log.jsonl"))
        except FileNotFoundError:  # a folder renamed while listed
            return False

    run_and_kill(tmp_path, ("taskspec.train.trainer", "DraftLoss.__call__", 0.1), config("killed"), checkpointed)
    assert not (drafter_set / "drafterset.json").exists()
    trained = counting(monkeypatch, trainer_module.DraftLoss, "__call__", when=torch.is_grad_enabled)
    assert main(config("killed")) == 0
    resumed_calls = trained[0]
    assert main(config("whole")) == 0
    assert 0 < resumed_calls < trained[0] - resumed_calls  # the restart kept the checkpointed steps
    stages = json.loads((tmp_path / "killed" / "summary.json").read_text())["stages"]
    assert stages["collect"] == stages["detect"] == stages["features"] == "skipped" and stages["build"] == "resumed"

    def weights(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.safetensors"))}

    assert weights(tmp_path / "whole" / "drafter-set") == weights(drafter_set)
    assert len(weights(drafter_set)) == 3  # generic and two heads, nothing left over
    assert not [p for p in drafter_set.rglob("*") if ".tmp-" in p.name or p.name.endswith(".old")]
