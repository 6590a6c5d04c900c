"""Drafter training: losses fall, resume after a kill continues the same loss curve, checkpoints load."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_llama
from taskspec.drafters.kinds import build_drafter
from taskspec.engine.decode import GenerationConfig, generate
from taskspec.errors import TaskspecError
from taskspec.train import trainer as trainer_module
from taskspec.train.features import Example, build_feature_cache
from taskspec.train.trainer import TrainConfig, train

# repetitive sequences a drafter can learn quickly
EXAMPLES = [Example(f"ex{i}", [1, 2 + i % 5], [(3 * k + i) % 11 + 3 for k in range(14)]) for i in range(24)]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    target = tiny_llama()
    folder = tmp_path_factory.mktemp("features")
    build_feature_cache(target, EXAMPLES, folder, top_k=5, examples_per_shard=8, progress=False)
    return target, str(folder)


@pytest.mark.parametrize("kind", ["eagle2", "hass"])
def test_training_learns_and_saves_a_loadable_drafter(features, tmp_path, kind):
    target, folder = features
    config = TrainConfig(kind=kind, steps=30, seqs_per_step=2, lr=3e-3, warmup_steps=2, draft_vocab_size=40,
                         save_every=15, eval_every=15, val_fraction=0.1, token_weight=1.0)
    last = train(target, [folder], tmp_path / "ckpt", config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 30 and last["step"] == 30
    assert sum(e["loss"] for e in log[-5:]) < sum(e["loss"] for e in log[:5])  # it learns
    assert len(last["val_acc_per_depth"]) == 3
    drafter = build_drafter(f"{kind}:{tmp_path / 'ckpt'},top_k=2,depth=3,num_nodes=4", target)
    assert len(drafter.vocab) == 40
    prompt = EXAMPLES[0].prompt_ids + EXAMPLES[0].response_ids[:4]
    config = GenerationConfig(max_new_tokens=12, stop_on_eos=False)
    assert generate(target, drafter, prompt, config).token_ids == generate(
        target, build_drafter("none", target), prompt, config).token_ids


def test_resume_after_kill_continues_the_same_loss_curve(features, tmp_path, monkeypatch):
    target, folder = features
    config = TrainConfig(kind="hass", steps=6, seqs_per_step=2, warmup_steps=1, draft_vocab_size=40, save_every=3,
                         eval_every=3, hca_passes=2)
    train(target, [folder], tmp_path / "whole", config, progress=False)

    real, calls = trainer_module.DraftLoss.__call__, [0]

    def dying(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 9:  # inside step 5 (2 sequences per step; evaluation at step 3 ran 2 more)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        train(target, [folder], tmp_path / "resumed", config, progress=False)
    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", real)
    train(target, [folder], tmp_path / "resumed", config, progress=False)
    whole = (tmp_path / "whole" / "train_log.jsonl").read_text()
    resumed = (tmp_path / "resumed" / "train_log.jsonl").read_text()
    assert [json.loads(x)["loss"] for x in resumed.splitlines()] == [json.loads(x)["loss"] for x in whole.splitlines()]
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "resumed" /
                                                                                    "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_settings_refuse_to_resume(features, tmp_path):
    target, folder = features
    train(target, [folder], tmp_path / "ckpt", TrainConfig(steps=2, seqs_per_step=1, draft_vocab_size=40,
                                                            save_every=1), progress=False)
    with pytest.raises(TaskspecError, match="other settings"):
        train(target, [folder], tmp_path / "ckpt", TrainConfig(steps=3, seqs_per_step=1, draft_vocab_size=40,
                                                                save_every=1), progress=False)
    with pytest.raises(TaskspecError, match="kind"):
        TrainConfig(kind="medusa")


def test_fine_tuning_starts_from_the_given_drafter(features, tmp_path):
    from taskspec.drafters.loading import load_drafter

    target, folder = features
    base = TrainConfig(kind="eagle2", steps=4, seqs_per_step=2, warmup_steps=1, draft_vocab_size=40, save_every=4,
                       eval_every=4)
    train(target, [folder], tmp_path / "base", base, progress=False)
    start = load_drafter(tmp_path / "base", target)

    captured = {}
    real = trainer_module.DraftLoss.__init__

    def spy(self, model, *args, **kwargs):
        captured.setdefault("weights", {k: v.detach().clone() for k, v in model.state_dict().items()})
        real(self, model, *args, **kwargs)

    tuned = TrainConfig(kind="hass", steps=2, seqs_per_step=2, warmup_steps=1, draft_vocab_size=40, save_every=2,
                        eval_every=2, hca_passes=2, init_from=str(tmp_path / "base"))
    trainer_module.DraftLoss.__init__ = spy
    try:
        train(target, [folder], tmp_path / "tuned", tuned, progress=False)
    finally:
        trainer_module.DraftLoss.__init__ = real
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "base" / "model.safetensors"))  # the trained weights (no dummy vocab rows)
    expected = {k: v for k, v in start.model.state_dict().items() if k in saved}
    assert len(expected) > 5
    different = [k for k in expected if not torch.equal(captured["weights"][k], expected[k].float())]
    assert not different, different
    assert torch.equal(load_drafter(tmp_path / "tuned", target).vocab.d2t, start.vocab.d2t)

    wrong_size = TrainConfig(kind="hass", steps=2, draft_vocab_size=32, init_from=str(tmp_path / "base"))
    with pytest.raises(TaskspecError, match="--draft-vocab-size 40"):
        train(target, [folder], tmp_path / "other", wrong_size, progress=False)
    with pytest.raises(TaskspecError, match="missing"):
        train(target, [folder], tmp_path / "other", TrainConfig(steps=2, draft_vocab_size=40,
                                                                init_from=str(tmp_path / "nothing")), progress=False)


class _Planted:
    """Unpickling this runs code: it calls open(path, "w"), which creates the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_planted_state_file_that_would_run_code_is_refused(features, tmp_path):
    target, folder = features
    config = TrainConfig(steps=2, seqs_per_step=1, draft_vocab_size=40, save_every=1)
    train(target, [folder], tmp_path / "ckpt", config, progress=False)
    state_path = tmp_path / "ckpt" / "train_state.pt"
    state = torch.load(state_path, weights_only=True)  # a run's state is tensors and plain data only
    ran = tmp_path / "code-ran"
    torch.save({**state, "step": 1, "payload": _Planted(ran)}, state_path)
    with pytest.raises(TaskspecError, match=r"train_state\.pt: cannot resume from it .*GLOBAL \w+\.open"):
        train(target, [folder], tmp_path / "ckpt", config, progress=False)
    assert not ran.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other-dict"])
def test_a_damaged_state_file_names_the_file(features, tmp_path, damage):
    target, folder = features
    config = TrainConfig(steps=2, seqs_per_step=1, draft_vocab_size=40, save_every=1)
    train(target, [folder], tmp_path / "ckpt", config, progress=False)
    state_path = tmp_path / "ckpt" / "train_state.pt"
    blob = state_path.read_bytes()
    if damage == "other-dict":
        torch.save({"step": 1}, state_path)
    else:
        state_path.write_bytes({"truncated": blob[: len(blob) // 2], "garbage": b"\x80\x02garbage" * 9,
                                "empty": b""}[damage])
    with pytest.raises(TaskspecError, match=r"train_state\.pt: cannot resume from it .*expected a training state"):
        train(target, [folder], tmp_path / "ckpt", config, progress=False)


def test_a_kill_between_the_renames_of_a_save_resumes_from_the_saved_step(features, tmp_path, monkeypatch):
    """write_folder_atomic renames ckpt → ckpt.old, then its temporary folder → ckpt: a kill in between leaves no
    ckpt. Loading reads ckpt.old meanwhile; resuming puts it back, continues from its step and cleans leftovers."""
    from taskspec.drafters.loading import load_drafter

    target, folder = features
    config = TrainConfig(kind="eagle2", steps=6, seqs_per_step=2, warmup_steps=1, draft_vocab_size=40, save_every=3,
                         eval_every=3)
    train(target, [folder], tmp_path / "whole", config, progress=False)

    real, calls = trainer_module.DraftLoss.__call__, [0]

    def dying(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 9:  # inside step 5: the checkpoint of step 3 is on disk
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        train(target, [folder], tmp_path / "ckpt", config, progress=False)
    # the state a kill between the two renames of the next save leaves: ckpt.old and an unfinished temporary folder
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")
    (tmp_path / "ckpt.tmp-k1ll3d").mkdir()
    (tmp_path / "ckpt.tmp-k1ll3d" / "model.safetensors").write_bytes(b"half")
    assert len(load_drafter(tmp_path / "ckpt", target).vocab) == 40  # readable meanwhile, nothing moved
    assert (tmp_path / "ckpt.old").is_dir() and not (tmp_path / "ckpt").exists()

    trained_steps = [0]

    def counting(self, *args, **kwargs):
        trained_steps[0] += torch.is_grad_enabled()  # evaluation runs without gradients
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.DraftLoss, "__call__", counting)
    train(target, [folder], tmp_path / "ckpt", config, progress=False)
    assert trained_steps[0] == (6 - 3) * 2  # resumed from step 3, not from 0
    assert (tmp_path / "ckpt" / "train_log.jsonl").read_text() == (tmp_path / "whole" / "train_log.jsonl").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "whole"]  # no ckpt.old, no temporary folder
