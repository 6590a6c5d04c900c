"""Training sequences from feature caches (train/features.py), mixed by weight, split into train and validation."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.fingerprint import fingerprint_diff
from .features import FeatureError, check_shard_header, read_manifest


@dataclass
class Sequence:
    """One example. T tokens: input_ids [T], loss_mask [T], hidden [T, H], topk_ids / topk_logits [T, K]."""

    id: str
    source: int  # index of the feature folder it came from
    input_ids: torch.Tensor
    loss_mask: torch.Tensor
    hidden: torch.Tensor
    topk_ids: torch.Tensor
    topk_logits: torch.Tensor


def load_feature_dirs(dirs: list[str | Path], target_fingerprint: dict | None = None) -> list[list[Sequence]]:
    """All sequences of each folder (in manifest order). Refuses folders built for another target."""
    out = []
    for index, folder in enumerate(Path(d) for d in dirs):
        manifest = read_manifest(folder)
        if target_fingerprint:
            wrong = fingerprint_diff(manifest["config"].get("target", {}), target_fingerprint)
            if wrong:
                raise FeatureError(f"--features {str(folder)!r} was built with another target ({', '.join(wrong)})")
        sequences = []
        for shard in manifest["shards"]:
            tensors = _load_shard(folder, shard)
            offsets = tensors["offsets"].tolist()
            for i, example_id in enumerate(shard["examples"]):
                a, b = offsets[i], offsets[i + 1]
                sequences.append(Sequence(example_id, index, tensors["input_ids"][a:b].long(),
                                          tensors["loss_mask"][a:b].bool(), tensors["hidden"][a:b],
                                          tensors["topk_ids"][a:b].long(), tensors["topk_logits"][a:b]))
        if not sequences:
            raise FeatureError(f"--features {str(folder)!r}: no finished shards yet")
        out.append(sequences)
    return out


def _load_shard(folder: Path, shard: dict) -> dict[str, torch.Tensor]:
    """One shard's tensors; FeatureError naming the file when it is missing, damaged or does not fit the manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_shard_header(folder, shard)
    path = folder / shard["file"]
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise FeatureError(f"{path}: damaged shard ({exc}); expected a safetensors file written by `taskspec "
                           "features`; delete the folder to rebuild the cache") from None
    offsets = tensors["offsets"]
    if offsets[0] != 0 or offsets[-1] != len(tensors["input_ids"]) or bool((offsets[1:] < offsets[:-1]).any()):
        raise FeatureError(f"{path}: damaged shard (offsets {offsets.tolist()[:4]}... do not split its "
                           f"{len(tensors['input_ids'])} tokens); delete the folder to rebuild the cache")
    return tensors


def select_examples(groups: list[list[Sequence]], example_ids: set[str], weights: list[float] | None,
                    dirs: list[str | Path]) -> tuple[list[list[Sequence]], list[float] | None]:
    """Only the sequences whose id is in `example_ids` (e.g. one task's examples), from every folder.

    A folder left empty leaves the mix together with its weight, so the other folders keep their proportions."""
    if weights is not None and len(weights) != len(groups):
        raise FeatureError(f"--mix {weights}: expected one weight per feature folder ({len(groups)})")
    kept, kept_weights = [], []
    for index, group in enumerate(groups):
        chosen = [seq for seq in group if seq.id in example_ids]
        if chosen:
            kept.append(chosen)
            kept_weights.append(weights[index] if weights is not None else 1.0)
    if not kept:
        sample = ", ".join(repr(group[0].id) for group in groups if group)
        raise FeatureError(f"none of the {len(example_ids)} selected example ids is in --features "
                           f"{', '.join(str(d) for d in dirs)} (their ids look like {sample})")
    return kept, kept_weights if weights is not None else None


def selection_digest(example_ids: set[str] | None) -> str | None:
    """sha256 of the sorted ids (None: no selection), recorded so a resume cannot silently train on other ones."""
    if example_ids is None:
        return None
    return hashlib.sha256("\n".join(sorted(example_ids)).encode()).hexdigest()


def split_validation(groups: list[list[Sequence]], fraction: float, seed: int) -> tuple[list[list[Sequence]],
                                                                                      list[Sequence]]:
    """Hold out `fraction` of each folder's sequences (at least one when a folder has two or more)."""
    rng = random.Random(seed)
    train, held_out = [], []
    for group in groups:
        order = list(range(len(group)))
        rng.shuffle(order)
        n_val = min(len(group) - 1, max(1, round(fraction * len(group)))) if fraction > 0 else 0
        held_out += [group[i] for i in order[:n_val]]
        train.append([group[i] for i in sorted(order[n_val:])])
    return train, held_out


def mixed_order(groups: list[list[Sequence]], weights: list[float] | None, count: int, seed: int) -> list[Sequence]:
    """`count` sequences drawn with folder probabilities ∝ weights, each folder cycled in a seeded shuffled order.

    Deterministic in (seed, count): a resumed run sees exactly the sequences an uninterrupted one would."""
    weights = weights or [1.0] * len(groups)
    if len(weights) != len(groups) or any(w < 0 for w in weights) or not sum(weights):
        raise FeatureError(f"--mix {weights}: expected one non-negative weight per feature folder, not all zero")
    rng = random.Random(seed)
    orders = [list(range(len(g))) for g in groups]
    for order in orders:
        rng.shuffle(order)
    cursor = [0] * len(groups)
    out = []
    for _ in range(count):
        g = rng.choices(range(len(groups)), weights=weights)[0]
        out.append(groups[g][orders[g][cursor[g] % len(orders[g])]])
        cursor[g] += 1
    return out
