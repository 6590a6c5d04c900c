"""Target fingerprints (models/fingerprint.py): a Hugging Face folder target is known by its weights' hash, so a
drafter or feature cache made for it is refused for a fine-tune of the same architecture."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import tiny_llama
from taskspec.drafters.checkpoint import save_drafter
from taskspec.drafters.eagle import random_drafter
from taskspec.drafters.loading import load_drafter
from taskspec.errors import DrafterError
from taskspec.models import fingerprint as fingerprint_module
from taskspec.models import target as target_module
from taskspec.models.fingerprint import weights_sha256
from taskspec.models.target import load_target
from taskspec.train.data import load_feature_dirs
from taskspec.train.features import Example, FeatureError, build_feature_cache

EXAMPLES = [Example(f"ex{i}", [1, 2 + i], [(3 * k + i) % 11 + 3 for k in range(6)]) for i in range(3)]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(a tiny model folder, an exact copy, a copy with one weight changed); hash cache under tmp_path."""
    monkeypatch.setenv("TASKSPEC_CACHE", str(tmp_path / "cache"))
    original = tmp_path / "original"
    model = tiny_llama().model
    model.save_pretrained(original)
    shutil.copytree(original, tmp_path / "copy")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 0.5  # one weight of a fine-tune
    model.save_pretrained(tmp_path / "tuned")
    return original, tmp_path / "copy", tmp_path / "tuned"


def load(folder):
    return load_target(str(folder), dtype="fp32", use_kernel=False)


def test_a_drafter_is_refused_for_a_folder_target_with_other_weights(folders, tmp_path):
    original, copy, tuned = folders
    target = load(original)
    assert target.fingerprint["sha256"] == weights_sha256(original)
    save_drafter(random_drafter(target, draft_vocab_size=30), tmp_path / "drafter")
    assert load_drafter(tmp_path / "drafter", load(copy)).kind == "eagle2"  # same weights elsewhere: fits
    with pytest.raises(DrafterError, match="another target.*sha256"):
        load_drafter(tmp_path / "drafter", load(tuned))


def test_a_feature_cache_is_refused_for_a_folder_target_with_other_weights(folders, tmp_path):
    original, copy, tuned = folders
    build_feature_cache(load(original), EXAMPLES, tmp_path / "features", top_k=3, progress=False)
    assert len(load_feature_dirs([tmp_path / "features"], load(copy).fingerprint)[0]) == len(EXAMPLES)
    with pytest.raises(FeatureError, match="another target.*sha256"):
        load_feature_dirs([tmp_path / "features"], load(tuned).fingerprint)


def test_weight_hashes_are_cached_until_a_file_changes(folders, tmp_path, monkeypatch):
    original, _, tuned = folders
    cache = tmp_path / "hashes.json"
    calls = []
    real = fingerprint_module.file_sha256
    monkeypatch.setattr(fingerprint_module, "file_sha256", lambda path: calls.append(path) or real(path))
    first = weights_sha256(original, cache)
    assert weights_sha256(original, cache) == first and len(calls) == 1  # the second time from the cache
    shutil.copyfile(tuned / "model.safetensors", original / "model.safetensors")  # changed in place
    assert weights_sha256(original, cache) == weights_sha256(tuned) != first
    assert len(calls) == 3  # rehashed once after the change (+ the uncached reference)
    cache.write_text("{not json")
    assert weights_sha256(tuned, cache) == weights_sha256(tuned)  # a damaged cache is ignored and rewritten


def test_weight_files_are_the_safetensors_and_pytorch_bins_only(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert weights_sha256(tmp_path) is None  # no weights: shapes are all there is to compare
    (tmp_path / "training_args.bin").write_bytes(b"not weights")
    assert weights_sha256(tmp_path) is None
    (tmp_path / "pytorch_model.bin").write_bytes(b"weights")
    alone = weights_sha256(tmp_path)
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"shard")
    assert None is not alone != weights_sha256(tmp_path)


def test_a_cached_hub_id_is_fingerprinted_by_its_snapshot(folders, tmp_path, monkeypatch):
    import huggingface_hub.constants

    original = folders[0]
    hub = tmp_path / "hub"
    snapshot = hub / "models--org--tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(original, snapshot)
    (hub / "models--org--tiny" / "refs").mkdir()
    (hub / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    assert target_module._hub_snapshot("org/tiny") == snapshot
    assert target_module._weights_hasher(snapshot)() == weights_sha256(original)
    assert target_module._hub_snapshot("org/not-cached") is None  # keeps its name only


def counted_hashes(monkeypatch) -> list:
    """The files hashed from now on (fingerprint.file_sha256 counted)."""
    calls = []
    real = fingerprint_module.file_sha256
    monkeypatch.setattr(fingerprint_module, "file_sha256", lambda path: calls.append(path) or real(path))
    return calls


def test_a_folder_target_hashes_its_weights_only_when_the_fingerprint_is_read(folders, monkeypatch):
    original = folders[0]
    calls = counted_hashes(monkeypatch)
    target = load_target(str(original), dtype="fp32", use_kernel=False, check=False)
    assert calls == []  # loading (a draft model, a run comparing nothing) reads no weight bytes for hashing
    assert target.fingerprint["sha256"] == weights_sha256(original)
    assert len(calls) == 2  # once for the target (memoised below), once for the uncached reference
    assert target.fingerprint["sha256"] and len(calls) == 2


def test_a_gguf_is_hashed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKSPEC_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF not really")
    converted = tmp_path / "cache" / "converted" / fingerprint_module.file_sha256(gguf)[:16]
    converted.mkdir(parents=True)  # as a finished conversion leaves it, so nothing is converted here
    (converted / "config.json").write_text("{}")
    (converted / "model.safetensors").write_bytes(b"")
    calls = counted_hashes(monkeypatch)
    first = target_module._converted_gguf(gguf)
    assert target_module._converted_gguf(gguf) == first == (converted, {"source": "model.gguf",
                                                                        "sha256": first[1]["sha256"]})
    assert len(calls) == 1


def test_a_feature_cache_resumes_for_the_same_weights_under_another_path(folders, tmp_path):
    original, copy, tuned = folders
    build_feature_cache(load(original), EXAMPLES, tmp_path / "features", top_k=3, progress=False)
    resumed = build_feature_cache(load(copy), EXAMPLES, tmp_path / "features", top_k=3, progress=False)
    assert resumed["complete"] and resumed["config"]["target"]["source"] == str(original.resolve())
    with pytest.raises(FeatureError, match="other settings.*target sha256"):
        build_feature_cache(load(tuned), EXAMPLES, tmp_path / "features", top_k=3, progress=False)
