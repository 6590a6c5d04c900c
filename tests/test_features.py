"""Feature cache: contents, deterministic shards, resume after a kill, mismatched folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_llama
from taskspec.train import features as feat
from taskspec.train.features import Example, FeatureError, build_feature_cache

EXAMPLES = [Example(f"ex{i}", [1, 5 + i, 7], [9, 11 + i, 3, 4 + i][: 2 + i % 3]) for i in range(7)]


def test_features_equal_a_plain_forward(tmp_path):
    target = tiny_llama()
    build_feature_cache(target, EXAMPLES[:3], tmp_path, top_k=5, examples_per_shard=2, progress=False)
    shard = load_file(str(tmp_path / "shard-00000.safetensors"))
    first = EXAMPLES[0]
    ids = torch.tensor(first.prompt_ids + first.response_ids)
    n = len(ids)
    with torch.inference_mode():
        logits = target.model(input_ids=ids[None]).logits[0]
    assert shard["input_ids"][:n].tolist() == ids.tolist()
    assert shard["loss_mask"][:n].tolist() == [0] * len(first.prompt_ids) + [1] * len(first.response_ids)
    assert torch.allclose(shard["topk_logits"][:n], logits.topk(5).values, atol=1e-4)
    assert torch.equal(shard["topk_ids"][:n].long(), logits.topk(5).indices)
    assert shard["hidden"].shape == (shard["offsets"][-1], target.hidden_size)
    assert shard["offsets"].tolist()[:2] == [0, n]


def test_resume_after_kill_writes_identical_shards(tmp_path, monkeypatch):
    target = tiny_llama()
    build_feature_cache(target, EXAMPLES, tmp_path / "whole", top_k=4, examples_per_shard=2, progress=False)

    real, calls = feat.example_features, [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # in the middle of the second shard
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(feat, "example_features", dying)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(target, EXAMPLES, tmp_path / "resumed", top_k=4, examples_per_shard=2, progress=False)
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert [s["index"] for s in manifest["shards"]] == [0]
    monkeypatch.setattr(feat, "example_features", real)
    done = build_feature_cache(target, EXAMPLES, tmp_path / "resumed", top_k=4, examples_per_shard=2,
                               progress=False)
    assert done["complete"] and len(done["shards"]) == 4
    for shard in done["shards"]:
        a = load_file(str(tmp_path / "whole" / shard["file"]))
        b = load_file(str(tmp_path / "resumed" / shard["file"]))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "resumed").glob("*.tmp"))


def test_other_settings_are_refused(tmp_path):
    target = tiny_llama()
    build_feature_cache(target, EXAMPLES[:2], tmp_path, top_k=4, examples_per_shard=2, progress=False)
    with pytest.raises(FeatureError, match="top_k"):
        build_feature_cache(target, EXAMPLES[:2], tmp_path, top_k=8, examples_per_shard=2, progress=False)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(FeatureError, match=r"manifest\.json: not a JSON file"):
        build_feature_cache(target, EXAMPLES[:2], tmp_path, top_k=4, examples_per_shard=2, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-tensors"])
def test_a_damaged_shard_names_the_file(tmp_path, damage):
    from safetensors.torch import save_file

    from taskspec.train.data import load_feature_dirs

    target = tiny_llama()
    build_feature_cache(target, EXAMPLES[:4], tmp_path, top_k=4, examples_per_shard=2, progress=False)
    shard = tmp_path / "shard-00001.safetensors"
    if damage == "other-tensors":
        save_file({"input_ids": torch.zeros(3, dtype=torch.int32)}, str(shard))
    else:
        blob = shard.read_bytes()
        shard.write_bytes(blob[: len(blob) - 100] if damage == "truncated" else b"\x00garbage" * 40)
    message = r"shard-00001\.safetensors: (damaged shard|not a shard of this manifest)"
    with pytest.raises(FeatureError, match=message):
        load_feature_dirs([tmp_path])
    with pytest.raises(FeatureError, match=message):  # resuming the cache checks the shards it keeps
        build_feature_cache(target, EXAMPLES[:4], tmp_path, top_k=4, examples_per_shard=2, progress=False)


@pytest.mark.parametrize("text", ["{broken", "[]", '{"config": {}}', '{"config": {}, "shards": [{"file": 3}]}',
                                  "\udcff"])
def test_a_damaged_manifest_names_the_file(tmp_path, text):
    from taskspec.train.data import load_feature_dirs

    target = tiny_llama()
    build_feature_cache(target, EXAMPLES[:2], tmp_path, top_k=4, examples_per_shard=2, progress=False)
    (tmp_path / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(FeatureError, match=r"manifest\.json: not a (JSON file|feature-cache manifest)"):
        load_feature_dirs([tmp_path])
    with pytest.raises(FeatureError, match=r"manifest\.json: not a (JSON file|feature-cache manifest)"):
        build_feature_cache(target, EXAMPLES[:2], tmp_path, top_k=4, examples_per_shard=2, progress=False)
