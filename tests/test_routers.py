"""Routers: fit/predict with confidences, save/load round trips, target-feature and sequence routing, the registry,
bad input."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch

from conftest import tiny_gemma3, tiny_llama, tiny_llama_with_tokenizer, tiny_tokenizer
from taskspec.tasks import (ROUTER_KINDS, EmbeddingRouter, SequenceRouter, TargetFeatureRouter, TaskDetectionError,
                            evaluate_router, load_router, make_router)
from test_detect import blobs


def same_routes(a, b) -> bool:
    """[(task, confidence)] lists: equal tasks, confidences equal to float precision."""
    return [t for t, _ in a] == [t for t, _ in b] and np.allclose([c for _, c in a], [c for _, c in b], atol=1e-5)


def test_embedding_router_learns_separated_tasks_and_round_trips(tmp_path):
    x, labels = blobs(3, per=40, seed=4)
    router = EmbeddingRouter().fit(x[::2], labels[::2])
    predicted = router.predict(x[1::2])
    assert [task for task, _ in predicted] == labels[1::2].tolist()
    assert all(0.5 < confidence <= 1.0 for _, confidence in predicted)
    router.save(tmp_path / "router.json")
    loaded = EmbeddingRouter.load(tmp_path / "router.json")
    assert same_routes(loaded.predict(x[1::2]), predicted)


def test_two_task_router_gives_probabilities_for_both():
    x, labels = blobs(2, per=20, seed=5)
    router = EmbeddingRouter().fit(x, labels)
    p = router.classifier.proba(x)
    assert p.shape == (40, 2) and np.allclose(p.sum(1), 1) and (p.argmax(1) == labels).all()


def _task_prompts(n: int, offset: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [(offset + rng.integers(0, 10, size=12)).tolist() for _ in range(n)]


def test_target_feature_router_routes_from_the_prefill_hidden_states(tmp_path):
    target = tiny_llama()
    prompts = _task_prompts(20, 3, 0) + _task_prompts(20, 70, 1)  # two "tasks": low and high token ids
    labels = [0] * 20 + [1] * 20
    router = TargetFeatureRouter(target).fit(prompts[::2], labels[::2])
    scores = evaluate_router(router, prompts[1::2], labels[1::2])
    assert scores["accuracy"] == 1.0 and scores["ms_per_prompt"] > 0
    from taskspec.models.cache import new_cache

    with torch.inference_mode():
        hidden = target.forward(torch.tensor(prompts[1]), new_cache(), logit_rows=None, want_hidden=True).hidden
    assert same_routes([router.predict_from_hidden(hidden)], router.predict([prompts[1]]))
    router.save(tmp_path / "router.json")
    assert same_routes(TargetFeatureRouter.load(tmp_path / "router.json", target).predict(prompts[:3]),
                       router.predict(prompts[:3]))
    with pytest.raises(TaskDetectionError, match="another target"):
        TargetFeatureRouter.load(tmp_path / "router.json", tiny_gemma3())
    # fitting on features computed once (e.g. pooled prefill states) is the same as fitting on the prompts
    again = TargetFeatureRouter(target).fit_features(router.features(prompts[::2]), labels[::2])
    assert same_routes(again.predict(prompts[1::2]), router.predict(prompts[1::2]))
    with pytest.raises(TaskDetectionError, match=r"\[n, d\] array"):
        TargetFeatureRouter(target).fit_features(np.zeros(4, dtype=np.float32), [0, 1, 0, 1])


@pytest.mark.parametrize("make, match", [
    (lambda: EmbeddingRouter().fit(np.eye(4, dtype=np.float32), [1, 1, 1, 1]), "at least two tasks"),
    (lambda: EmbeddingRouter().fit(np.eye(4, dtype=np.float32), [0, 1]), "4 prompts and 2 labels"),
    (lambda: TargetFeatureRouter(tiny_llama()).predict([[1, 2, 3]]), "not fitted"),
    (lambda: evaluate_router(EmbeddingRouter(), [], []), "no prompts"),
])
def test_router_bad_input(make, match):
    with pytest.raises(TaskDetectionError, match=match):
        make()


def test_router_file_of_another_kind_is_refused(tmp_path):
    x, labels = blobs(2, per=5)
    EmbeddingRouter().fit(x, labels).save(tmp_path / "r.json")
    with pytest.raises(TaskDetectionError, match="unreadable"):
        TargetFeatureRouter.load(tmp_path / "r.json", tiny_llama())


# ---- the sequence router -------------------------------------------------------------------------------------------
FAST = {"buckets": 512, "dim": 16, "epochs": 20}  # small enough to train in about a second


def _families(per: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Three prompt families over overlapping characters: digit-heavy, letter-heavy and symbol-heavy strings (70% of
    each from its own alphabet, 30% drawn from all three), interleaved so even/odd rows split every family."""
    rng = np.random.default_rng(seed)
    alphabets = [string.digits, string.ascii_lowercase, "+-*/=<>()[]{}!?#%&"]
    mixed = "".join(alphabets)
    prompts, labels = [], []
    for i in range(per * len(alphabets)):
        task = i % len(alphabets)
        chars = [rng.choice(list(alphabets[task] if rng.random() < 0.7 else mixed))
                 for _ in range(int(rng.integers(12, 40)))]
        prompts.append("".join(chars))
        labels.append(task)
    return prompts, labels


def test_sequence_router_separates_prompt_families():
    prompts, labels = _families(40)
    router = SequenceRouter(tiny_tokenizer(), **FAST).fit(prompts[::2], labels[::2])
    assert router.losses[-1] < 0.5 * router.losses[0]
    scores = evaluate_router(router, prompts[1::2], labels[1::2])
    assert scores["accuracy"] >= 0.95 and scores["ms_per_prompt"] > 0
    routes = router.predict(prompts[1::2])
    assert all(1 / 3 < confidence <= 1.0 for _, confidence in routes)
    # a prompt routes the same alone as in a batch (the padding is invisible), and as text or as its token ids
    assert same_routes(routes, [router.predict([p])[0] for p in prompts[1::2]])
    ids = [tiny_tokenizer()(p, add_special_tokens=False)["input_ids"] for p in prompts[1::2]]
    assert same_routes(router.predict(ids), routes)


def test_sequence_router_round_trips_through_safetensors_and_json(tmp_path):
    prompts, labels = _families(10)
    router = SequenceRouter(tiny_tokenizer(), **FAST).fit(prompts, labels)
    path = router.save(tmp_path / "sequence.json")
    stored = json.loads(path.read_text())
    assert stored["kind"] == "sequence" and stored["classes"] == [0, 1, 2] and stored["options"]["dim"] == 16
    assert (tmp_path / "sequence.safetensors").is_file() and not list(tmp_path.glob("*.tmp"))
    loaded = SequenceRouter.load(path, tiny_tokenizer())
    assert loaded.predict(prompts) == router.predict(prompts)  # bitwise: same weights, same arithmetic
    assert load_router(path, tiny_llama_with_tokenizer()).predict(prompts) == router.predict(prompts)
    with pytest.raises(TaskDetectionError, match="another tokenizer"):
        SequenceRouter.load(path, tiny_tokenizer(vocab=60))
    (tmp_path / "sequence.safetensors").write_bytes(b"not the weights")
    with pytest.raises(TaskDetectionError, match="unreadable.*does not match"):
        SequenceRouter.load(path, tiny_tokenizer())


def test_sequence_router_training_is_seeded_and_deterministic():
    prompts, labels = _families(10)
    torch.manual_seed(0)
    a = SequenceRouter(tiny_tokenizer(), **FAST, seed=3).fit(prompts, labels)
    torch.manual_seed(1)  # the caller's random stream plays no part
    rng_before = torch.get_rng_state()
    b = SequenceRouter(tiny_tokenizer(), **FAST, seed=3).fit(prompts, labels)
    c = SequenceRouter(tiny_tokenizer(), **FAST, seed=4).fit(prompts, labels)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    weights = [r.net.state_dict() for r in (a, b, c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert a.losses == b.losses and a.predict(prompts) == b.predict(prompts)
    assert not torch.equal(weights[0]["head.weight"], weights[2]["head.weight"])


@pytest.mark.parametrize("make, match", [
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).fit([], []), "0 prompts and 0 labels"),
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).fit(["12", "34"], [0]), "2 prompts and 1 labels"),
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).fit(["12", "34"], [5, 5]), "at least two tasks"),
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).fit(["12", "  "], [0, 1]), "prompt 1 is empty"),
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).fit(["12", "ab"], ["math", "chat"]), "integer task ids"),
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).fit(["12", [3, None]], [0, 1]), "prompt 1: expected text"),
    (lambda: SequenceRouter(tiny_tokenizer(), **FAST).predict(["12"]), "not fitted"),
    (lambda: SequenceRouter(tiny_tokenizer(), buckets=1), "buckets = 1"),
    (lambda: SequenceRouter(None), "needs the target's tokenizer"),
])
def test_sequence_router_bad_input(make, match):
    with pytest.raises(TaskDetectionError, match=match):
        make()


# ---- the registry ------------------------------------------------------------------------------------------------
def test_make_router_builds_every_kind_and_load_router_dispatches(tmp_path):
    target = tiny_llama_with_tokenizer()
    assert isinstance(make_router("embedding"), EmbeddingRouter)
    assert isinstance(make_router("target-feature", target), TargetFeatureRouter)
    sequence = make_router("sequence", target, seed=7, **FAST)
    assert isinstance(sequence, SequenceRouter) and sequence.tokenizer is target.tokenizer
    assert sequence.options["seed"] == 7 and ROUTER_KINDS == ("embedding", "target-feature", "sequence")

    x, labels = blobs(2, per=5)
    EmbeddingRouter().fit(x, labels).save(tmp_path / "embedding.json")
    assert isinstance(load_router(tmp_path / "embedding.json"), EmbeddingRouter)
    ids = _task_prompts(6, 3, 0) + _task_prompts(6, 70, 1)
    feature_router = make_router("target-feature", target).fit(ids, [0] * 6 + [1] * 6)
    feature_router.save(tmp_path / "feature.json")
    loaded = load_router(tmp_path / "feature.json", target)
    assert isinstance(loaded, TargetFeatureRouter) and same_routes(loaded.predict(ids), feature_router.predict(ids))
    with pytest.raises(TaskDetectionError, match="another target"):
        load_router(tmp_path / "feature.json", tiny_gemma3())
    with pytest.raises(TaskDetectionError, match="needs the target"):
        load_router(tmp_path / "feature.json")
    prompts, task_labels = _families(6)
    sequence.fit(prompts, task_labels).save(tmp_path / "sequence.json")
    assert isinstance(load_router(tmp_path / "sequence.json", target), SequenceRouter)


def test_router_files_written_before_the_registry_still_load(tmp_path):
    target = tiny_llama()
    ids = _task_prompts(6, 3, 0) + _task_prompts(6, 70, 1)
    router = TargetFeatureRouter(target).fit(ids, [0] * 6 + [1] * 6)
    path = router.save(tmp_path / "old.json")
    data = json.loads(path.read_text())
    data["kind"] = "target-features"  # the stored kind before the registry's name "target-feature"
    path.write_text(json.dumps(data))
    assert same_routes(load_router(path, target).predict(ids), router.predict(ids))
    assert same_routes(TargetFeatureRouter.load(path, target).predict(ids), router.predict(ids))


@pytest.mark.parametrize("make, match", [
    (lambda: make_router("mamba"), r"unknown router kind 'mamba'; expected one of: embedding, target-feature, "
                                   r"sequence"),
    (lambda: make_router("sequence"), "sequence router needs the target"),
    (lambda: make_router("target-feature"), "target-feature router needs the target"),
    (lambda: make_router("sequence", tiny_llama()), "needs the target's tokenizer"),
    (lambda: make_router("embedding", epochs=3), r"unknown option\(s\) epochs; expected some of: encoder, c"),
])
def test_registry_bad_input(make, match):
    with pytest.raises(TaskDetectionError, match=match):
        make()


def test_load_router_refuses_unknown_kinds_and_other_files(tmp_path):
    (tmp_path / "odd.json").write_text(json.dumps({"format": "taskspec-router", "version": 1, "kind": "mamba"}))
    with pytest.raises(TaskDetectionError, match="unknown router kind 'mamba'; expected one of: embedding"):
        load_router(tmp_path / "odd.json")
    (tmp_path / "map.json").write_text(json.dumps({"format": "taskspec-taskmap"}))
    with pytest.raises(TaskDetectionError, match="unreadable"):
        load_router(tmp_path / "map.json")
    with pytest.raises(TaskDetectionError, match="unreadable"):
        load_router(tmp_path / "missing.json")
