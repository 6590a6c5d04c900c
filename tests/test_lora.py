"""LoRA adapters on a feature drafter: only the adapter trains and ships, loading merges it exactly like peft's
unmerged forward, bad folders fail clearly, runs resume; and training on a subset of examples (example_ids)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch

from conftest import tiny_gemma3, tiny_llama
from taskspec.drafters.checkpoint import save_drafter
from taskspec.drafters.eagle import EagleDrafter, random_drafter
from taskspec.drafters.loading import load_drafter
from taskspec.drafters.lora import ADAPTER_FILE, DEFAULT_TARGETS, adapter_size_bytes, load_adapter
from taskspec.errors import DrafterError, TaskspecError
from taskspec.models.causal_lm import CausalLM
from taskspec.train import trainer as trainer_module
from taskspec.train.features import Example, build_feature_cache
from taskspec.train.trainer import TrainConfig, train

# repetitive sequences a drafter can learn quickly; two feature folders: ex0..ex11 and ex12..ex23
EXAMPLES = [Example(f"ex{i}", [1, 2 + i % 5], [(3 * k + i) % 11 + 3 for k in range(14)]) for i in range(24)]
MODULES = 8  # linear layers of a tiny Llama drafter: fc, q/k/v/o, gate/up/down


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(target, two feature folders, a random base drafter folder, a LoRA adapter trained on it)."""
    target = tiny_llama()
    root = tmp_path_factory.mktemp("lora")
    dirs = [str(root / "features-a"), str(root / "features-b")]
    build_feature_cache(target, EXAMPLES[:12], dirs[0], top_k=5, examples_per_shard=6, progress=False)
    build_feature_cache(target, EXAMPLES[12:], dirs[1], top_k=5, examples_per_shard=6, progress=False)
    base = root / "base"
    save_drafter(random_drafter(target, draft_vocab_size=40, seed=3), base)
    adapter = root / "adapter"
    train(target, dirs, adapter, lora_config(base, steps=24), progress=False)
    return target, dirs, base, adapter


def lora_config(base, **overrides) -> TrainConfig:
    settings = dict(kind="eagle2", steps=6, seqs_per_step=2, lr=1e-2, warmup_steps=2, draft_vocab_size=40,
                    save_every=3, eval_every=3, token_weight=1.0, lora_rank=4, lora_alpha=8.0, init_from=str(base))
    return TrainConfig(**{**settings, **overrides})


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def body_outputs(drafter: EagleDrafter, seed: int = 0) -> torch.Tensor:
    """[n, draft_vocab] draft logits of the drafter's model on fixed random (token embedding, feature) pairs."""
    generator = torch.Generator().manual_seed(seed)
    hidden = drafter.target.hidden_size
    embeds, feats = torch.randn(9, hidden, generator=generator), torch.randn(9, hidden, generator=generator)
    with torch.no_grad():
        inputs = drafter.model.fuse(embeds, feats)  # [9, hidden]
        out = drafter.model.body.model(inputs_embeds=inputs[None]).last_hidden_state[0]  # [9, hidden]
        return drafter.logits(out)


# ---- training ------------------------------------------------------------------------------------------------------
def test_lora_trains_only_the_adapter_and_ships_it_small(setup):
    from safetensors.torch import load_file

    target, _, base, adapter = setup
    log = [json.loads(line) for line in (adapter / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 24
    assert sum(e["loss"] for e in log[-5:]) < 0.9 * sum(e["loss"] for e in log[:5])  # it learns

    # only the adapter (and the resume state) is in the folder, no base weights
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter.safetensors", "config.json", "train_log.jsonl",
                                                        "train_state.pt"]
    tensors = load_file(str(adapter / ADAPTER_FILE))
    assert len(tensors) == 2 * MODULES and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors)
    assert all(t.shape[0] == 4 or t.shape[1] == 4 for t in tensors.values())  # rank 4
    state = torch.load(adapter / "train_state.pt", weights_only=False)
    assert state["model"] and all(".lora_" in k for k in state["model"])
    assert len(state["optimizer"]["param_groups"][0]["params"]) == 2 * MODULES  # nothing else was optimised
    size, base_size = adapter_size_bytes(adapter), (base / "model.safetensors").stat().st_size
    print(f"adapter {size} bytes, base drafter {base_size} bytes")
    assert size < base_size / 2  # a tiny base (47 KB); on the embedded target, rank 8: 0.48 MB vs a 12.9 MB head

    config = json.loads((adapter / "config.json").read_text())
    assert config["format"] == "taskspec-lora-adapter" and config["version"] == 1 and config["kind"] == "eagle2"
    assert (config["rank"], config["alpha"], tuple(config["targets"])) == (4, 8.0, DEFAULT_TARGETS)
    assert len(config["modules"]) == MODULES
    assert config["base"] == {"path": str(base), "relative": os.path.relpath(base.resolve(), adapter.resolve()),
                              "sha256": sha256(base / "model.safetensors")}
    assert config["target"]["architecture"] == "LlamaForCausalLM"

    # merged, the adapted weights moved and nothing else did (norms, d2t; the body's unused dummy rows aside)
    merged, start = load_drafter(adapter, target), load_drafter(base, target)
    before, after = start.model.state_dict(), merged.model.state_dict()
    stored = load_file(str(base / "model.safetensors")).keys() - {"d2t"}
    assert len(stored) > MODULES
    moved = {k for k in stored if not torch.equal(before[k], after[k])}
    assert moved == {f"{m}.weight" for m in config["modules"]}
    assert torch.equal(merged.vocab.d2t, start.vocab.d2t)


def test_resume_after_kill_continues_the_same_lora_loss_curve(setup, tmp_path, monkeypatch):
    target, dirs, base, _ = setup
    config = lora_config(base, kind="hass", hca_passes=2)
    train(target, dirs, tmp_path / "whole", config, progress=False)

    real, calls = trainer_module.DraftLoss.__call__, [0]

    def dying(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 11:  # inside step 5: 2 sequences per step, and evaluation at step 3 ran 2 more
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        train(target, dirs, tmp_path / "resumed", config, progress=False)
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["train_step"] == 3
    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", real)
    train(target, dirs, tmp_path / "resumed", config, progress=False)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
              for run in ("whole", "resumed")]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / run / ADAPTER_FILE)) for run in ("whole", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_settings_are_checked(setup, tmp_path):
    target, dirs, base, adapter = setup
    with pytest.raises(TaskspecError, match="--init"):
        TrainConfig(lora_rank=8)
    with pytest.raises(TaskspecError, match="--lora-rank must be >= 0"):
        TrainConfig(lora_rank=-1)
    with pytest.raises(TaskspecError, match="no linear layer .* named so.*q_proj"):
        train(target, dirs, tmp_path / "x", lora_config(base, lora_targets=("qkv_proj",)), progress=False)
    with pytest.raises(TaskspecError, match="a LoRA adapter"):  # no adapter on an adapter
        train(target, dirs, tmp_path / "x", lora_config(adapter), progress=False)
    # targets by suffix: only the attention projections
    train(target, dirs, tmp_path / "attn", lora_config(base, steps=1, lora_targets=["q_proj", "v_proj"]),
          progress=False)
    modules = json.loads((tmp_path / "attn" / "config.json").read_text())["modules"]
    assert modules == ["body.model.layers.0.self_attn.q_proj", "body.model.layers.0.self_attn.v_proj"]

    # a resume whose base changed since the run started is refused
    moving = tmp_path / "base-copy"
    shutil.copytree(base, moving)
    config = lora_config(moving, steps=4, save_every=2)
    train(target, dirs, tmp_path / "run", lora_config(moving, steps=2, save_every=2), progress=False)
    save_drafter(random_drafter(target, draft_vocab_size=40, seed=4), moving)
    with pytest.raises(TaskspecError, match="other settings"):  # steps differ
        train(target, dirs, tmp_path / "run", config, progress=False)
    with pytest.raises(TaskspecError, match="base drafter .* other weights"):
        train(target, dirs, tmp_path / "run", lora_config(moving, steps=2, save_every=2), progress=False)


# ---- loading -------------------------------------------------------------------------------------------------------
def test_merged_adapter_matches_peft_unmerged_forward(setup):
    from peft.tuners.lora import LoraLayer

    target, _, base, adapter = setup
    merged = load_drafter(adapter, target, depth=4)
    reference = load_adapter(adapter, target, merge=False)
    assert type(merged) is EagleDrafter and str(adapter) in merged.name and merged.depth == 4
    assert not any(isinstance(m, LoraLayer) for m in merged.model.modules())  # a plain head: same speed
    assert sum(isinstance(m, LoraLayer) for m in reference.model.modules()) == MODULES
    got, want = body_outputs(merged), body_outputs(reference)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - body_outputs(load_drafter(base, target))).abs().max() > 1e-2  # the adapter matters

    # stored back in the base dtype: a bf16 target gets bf16 weights, W + (alpha/r)·B·A rounded once
    bf16 = CausalLM(tiny_llama().model.to(torch.bfloat16), name="tiny-llama-0")
    merged16, base16 = load_drafter(adapter, bf16), load_drafter(base, bf16)
    from safetensors.torch import load_file

    tensors = load_file(str(adapter / ADAPTER_FILE))
    q = "body.model.layers.0.self_attn.q_proj"
    expected = base16.model.get_submodule(q).weight.float() + 2.0 * tensors[f"{q}.lora_B.weight"] @ tensors[
        f"{q}.lora_A.weight"]
    assert merged16.model.get_submodule(q).weight.dtype == torch.bfloat16
    assert torch.equal(merged16.model.get_submodule(q).weight, expected.to(torch.bfloat16))


def test_adapter_and_base_move_together(setup, tmp_path):
    target, _, base, adapter = setup
    shutil.copytree(base, tmp_path / "base")
    shutil.copytree(adapter, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    config["base"]["path"] = str(tmp_path / "gone")  # only the relative path can find it
    (tmp_path / "adapter" / "config.json").write_text(json.dumps(config))
    moved = load_drafter(tmp_path / "adapter", target)
    torch.testing.assert_close(body_outputs(moved), body_outputs(load_drafter(adapter, target)), rtol=0, atol=0)

    shutil.rmtree(tmp_path / "base")
    with pytest.raises(DrafterError, match=r"config.json'?: its base drafter is missing .*gone"):
        load_drafter(tmp_path / "adapter", target)


def test_adapter_finds_its_base_among_the_shipped_drafters(setup, tmp_path, monkeypatch):
    """A set shipped in the package keeps adapters whose base is a shipped drafter: found by its weights hash."""
    from taskspec.drafters import shipped

    target, _, base, adapter = setup
    shutil.copytree(adapter, tmp_path / "set" / "lora-a")
    config = json.loads((tmp_path / "set" / "lora-a" / "config.json").read_text())
    config["base"].update(path=str(tmp_path / "gone"), relative="../../gone")
    (tmp_path / "set" / "lora-a" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "shipped")
    with pytest.raises(DrafterError, match="its base drafter is missing .*drafters shipped in"):
        load_drafter(tmp_path / "set" / "lora-a", target)

    shutil.copytree(base, tmp_path / "shipped" / "eagle2-tiny")
    found = load_drafter(tmp_path / "set" / "lora-a", target)
    torch.testing.assert_close(body_outputs(found), body_outputs(load_drafter(adapter, target)), rtol=0, atol=0)


def test_bad_adapters_raise_clear_errors(setup, tmp_path):
    target, _, base, adapter = setup

    def copy(name: str):
        folder = tmp_path / name
        shutil.copytree(adapter, folder)
        return folder

    with pytest.raises(DrafterError, match="another target"):
        load_drafter(adapter, tiny_gemma3())

    folder = copy("no-weights")
    (folder / ADAPTER_FILE).unlink()
    with pytest.raises(DrafterError, match=f"no-weights'?: missing {ADAPTER_FILE}"):
        load_drafter(folder, target)

    folder = copy("corrupt")
    (folder / ADAPTER_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DrafterError, match=f"corrupt/{ADAPTER_FILE}'?: corrupt weights"):
        load_drafter(folder, target)

    folder = copy("bad-config")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(DrafterError, match="bad-config/config.json'?: unreadable config"):
        load_drafter(folder, target)

    folder = copy("wrong-rank")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rank": 8}))
    with pytest.raises(DrafterError, match=r"wrong-rank/adapter.safetensors'?: weights do not match .*expected \(8, "):
        load_drafter(folder, target)

    folder = copy("no-module")
    (folder / "config.json").write_text(json.dumps({**config, "modules": config["modules"] + ["body.model.norm"]}))
    with pytest.raises(DrafterError, match="'body.model.norm' is not a linear layer"):
        load_drafter(folder, target)

    folder = copy("no-format")
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "base"}))
    with pytest.raises(DrafterError, match="not a taskspec-lora-adapter v1 config"):
        load_drafter(folder, target)

    # the base was retrained (or replaced) after the adapter was: refused, naming the base's weights file
    shutil.copytree(base, tmp_path / "pair" / "base")
    shutil.copytree(adapter, tmp_path / "pair" / "adapter")
    save_drafter(random_drafter(target, draft_vocab_size=40, seed=5), tmp_path / "pair" / "base")
    with pytest.raises(DrafterError, match=r"pair/base/model.safetensors'? has other weights"):
        load_drafter(tmp_path / "pair" / "adapter", target)


# ---- example subsets -----------------------------------------------------------------------------------------------
def test_example_ids_select_the_training_sequences(setup, tmp_path, monkeypatch):
    target, dirs, _, _ = setup
    seen, real = [], trainer_module.DraftLoss.__call__

    def spy(self, seq, *args, **kwargs):
        seen.append(seq.id)
        return real(self, seq, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", spy)
    config = TrainConfig(steps=4, seqs_per_step=2, draft_vocab_size=40, save_every=2, eval_every=2)
    chosen = {"ex1", "ex2", "ex3", "ex14", "ex15", "ex16", "not-in-any-folder"}
    train(target, dirs, tmp_path / "both", config, mix=[1.0, 1.0], progress=False, example_ids=chosen)
    assert set(seen) <= chosen and {"ex1", "ex2", "ex3"} & set(seen) and {"ex14", "ex15", "ex16"} & set(seen)
    saved = json.loads((tmp_path / "both" / "config.json").read_text())["examples"]
    assert saved["count"] == len(chosen)

    # folder a is left empty: it leaves the mix with its weight (else the two-weight mix would not fit one folder)
    seen.clear()
    only_b = {f"ex{i}" for i in range(12, 18)}
    train(target, dirs, tmp_path / "b", config, mix=[5.0, 1.0], progress=False, example_ids=only_b)
    assert seen and set(seen) <= only_b

    # a resume with another selection (or none) is refused like any other setting change
    with pytest.raises(TaskspecError, match="other settings"):
        train(target, dirs, tmp_path / "b", config, mix=[5.0, 1.0], progress=False, example_ids=only_b | {"ex19"})
    with pytest.raises(TaskspecError, match="other settings"):
        train(target, dirs, tmp_path / "b", config, mix=[5.0, 1.0], progress=False)
    train(target, dirs, tmp_path / "b", config, mix=[5.0, 1.0], progress=False, example_ids=set(only_b))  # same

    for nothing in (set(), {"mathinstruct/464"}):
        with pytest.raises(TaskspecError, match="features-a, .*features-b .*'ex0'"):
            train(target, dirs, tmp_path / "none", config, progress=False, example_ids=nothing)
