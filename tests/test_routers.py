"""Routers: fit/predict with confidences, save/load round trips, target-feature routing, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_gemma3, tiny_llama
from taskspec.tasks import TaskDetectionError
from taskspec.tasks.routers import EmbeddingRouter, TargetFeatureRouter, evaluate_router
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
    from taskspec.engine.cache import new_cache

    with torch.inference_mode():
        hidden = target.forward(torch.tensor(prompts[1]), new_cache(), logit_rows=None, want_hidden=True).hidden
    assert same_routes([router.predict_from_hidden(hidden)], router.predict([prompts[1]]))
    router.save(tmp_path / "router.json")
    assert same_routes(TargetFeatureRouter.load(tmp_path / "router.json", target).predict(prompts[:3]),
                       router.predict(prompts[:3]))
    with pytest.raises(TaskDetectionError, match="another target"):
        TargetFeatureRouter.load(tmp_path / "router.json", tiny_gemma3())


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
