"""Feature cache: the target's hidden states and top-K logits over training texts, in resumable shards.

Each example is a prompt and a response (a dataset's reference response, or the target's own greedy output for
self-distillation). The target runs over prompt + response once; for every token we keep the final hidden state
(bf16) and the K best logits with their ids, plus a loss mask that is 1 on response tokens only.

Layout of DIR:
    target_outputs.jsonl        with the target as the source: its outputs, collected once (taskspec.collect)
    manifest.json               config (target fingerprint, K, source, data) and the list of finished shards
    shard-00000.safetensors     input_ids [T] int32, loss_mask [T] uint8, hidden [T, H] bf16,
                                topk_ids [T, K] int32, topk_logits [T, K] float32, offsets [E + 1] int64
Shard s always holds examples [s·E, (s+1)·E) of the example list, so a run killed at any point and restarted
writes exactly the same shards; shards and the manifest are written to temporary files and renamed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import Prompt
from ..errors import TaskspecError
from ..io_utils import read_json, write_json_atomic
from ..models.cache import new_cache
from ..models.causal_lm import CausalLM
from ..models.fingerprint import fingerprint_diff, target_fingerprint

MANIFEST = "manifest.json"
FORMAT = "taskspec-features"
VERSION = 1
HEAD_CHUNK = 64  # rows per LM-head call: [64, 262144] float32 logits = 64 MB
SHARD_KEYS = ("input_ids", "loss_mask", "hidden", "topk_ids", "topk_logits", "offsets")


class FeatureError(TaskspecError):
    """A feature folder that does not match the request, or is damaged."""


@dataclass(frozen=True)
class Example:
    id: str
    prompt_ids: list[int]
    response_ids: list[int]


def examples_from_dataset(target: CausalLM, prompts: list[Prompt], max_tokens: int) -> list[Example]:
    """Prompt + the dataset's reference response (rows without one are skipped), truncated to max_tokens."""
    out = []
    for prompt in prompts:
        response = prompt.meta.get("response")
        if not response:
            continue
        ids = target.tokenizer(prompt.text, add_special_tokens=True)["input_ids"]
        response_ids = target.tokenizer("\n" + response, add_special_tokens=False)["input_ids"]
        out.append(_truncated(prompt.id, ids, response_ids, max_tokens))
    return [e for e in out if e.response_ids]


def examples_from_target(target: CausalLM, prompts: list[Prompt], max_tokens: int, max_new_tokens: int,
                         outputs: str | Path, progress: bool = True) -> list[Example]:
    """Prompt + the target's own greedy output (self-distillation).

    The outputs are collected into the JSONL file `outputs` (see taskspec.collect) by the fastest lossless
    drafter, one flushed record per prompt, so a killed run decodes again only the prompts it had not finished.
    """
    from ..collect import collect
    from ..engine.decode import GenerationConfig

    records = collect(target, prompts, outputs, config=GenerationConfig(max_new_tokens=max_new_tokens),
                      progress=progress)
    return examples_from_outputs(target, prompts, {r["id"]: r["output_ids"] for r in records}, max_tokens)


def examples_from_outputs(target: CausalLM, prompts: list[Prompt], output_ids: dict[str, list[int]],
                          max_tokens: int) -> list[Example]:
    """Prompt + its collected output ({prompt id: output token ids}), each prompt once, empty outputs skipped."""
    out = []
    for prompt in {p.id: p for p in prompts if p.id in output_ids}.values():
        ids = target.tokenizer(prompt.text, add_special_tokens=True)["input_ids"]
        out.append(_truncated(prompt.id, ids, output_ids[prompt.id], max_tokens))
    return [e for e in out if e.response_ids]


def _truncated(example_id: str, prompt_ids: list[int], response_ids: list[int], max_tokens: int) -> Example:
    prompt_ids = prompt_ids[: max(1, max_tokens // 2)]  # keep room for the response
    return Example(example_id, prompt_ids, response_ids[: max_tokens - len(prompt_ids)])


@torch.inference_mode()
def example_features(target: CausalLM, example: Example, top_k: int) -> dict[str, torch.Tensor]:
    """One example's tensors (see the module docstring), T = prompt + response tokens."""
    ids = torch.tensor(example.prompt_ids + example.response_ids)  # [T]
    out = target.forward(ids, new_cache(), logit_rows=None, want_hidden=True)
    hidden = out.hidden  # [T, H]
    values, indices = [], []
    for start in range(0, len(ids), HEAD_CHUNK):
        top = torch.topk(target.head(hidden[start : start + HEAD_CHUNK]), top_k, dim=-1)
        values.append(top.values)
        indices.append(top.indices)
    mask = torch.zeros(len(ids), dtype=torch.uint8)
    mask[len(example.prompt_ids):] = 1
    return {"input_ids": ids.to(torch.int32), "loss_mask": mask, "hidden": hidden.to(torch.bfloat16),
            "topk_ids": torch.cat(indices).to(torch.int32), "topk_logits": torch.cat(values).float()}


def build_feature_cache(target: CausalLM, examples: list[Example], out_dir: str | Path, *, top_k: int = 10,
                        examples_per_shard: int = 64, meta: dict | None = None, progress: bool = True) -> dict:
    """Write (or finish) the feature cache in out_dir; returns the manifest."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "version": VERSION, "target": target_fingerprint(target), "top_k": top_k,
              "examples_per_shard": examples_per_shard, "num_examples": len(examples),
              "example_ids_hash": _ids_hash(examples), **(meta or {})}
    manifest = _load_or_start(out_dir, config)
    done = {s["index"] for s in manifest["shards"]}
    num_shards = -(-len(examples) // examples_per_shard)
    total_tokens = sum(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    finished_tokens = sum(s["tokens"] for s in manifest["shards"])
    bar = tqdm(total=total_tokens, initial=finished_tokens, desc="features", unit="tok", unit_scale=True,
               disable=not progress)
    start_time, fresh_tokens = time.perf_counter(), 0
    for index in range(num_shards):
        if index in done:
            continue
        batch = examples[index * examples_per_shard : (index + 1) * examples_per_shard]
        parts = []
        for example in batch:
            parts.append(example_features(target, example, top_k))
            n = len(parts[-1]["input_ids"])
            fresh_tokens += n
            bar.update(n)
            bar.set_postfix_str(f"{fresh_tokens / (time.perf_counter() - start_time):.0f} tok/s")
        tensors = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        lengths = torch.tensor([0] + [len(p["input_ids"]) for p in parts])
        tensors["offsets"] = torch.cumsum(lengths, 0)
        name = f"shard-{index:05d}.safetensors"
        tmp = out_dir / (name + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(out_dir / name)
        manifest["shards"].append({"index": index, "file": name, "examples": [e.id for e in batch],
                                   "tokens": int(lengths.sum()),
                                   "response_tokens": int(tensors["loss_mask"].sum())})
        manifest["shards"].sort(key=lambda s: s["index"])
        write_json_atomic(out_dir / MANIFEST, manifest)
    bar.close()
    manifest["complete"] = len(manifest["shards"]) == num_shards
    manifest["tokens_per_second_this_run"] = round(fresh_tokens / max(time.perf_counter() - start_time, 1e-9), 1)
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def _ids_hash(examples: list[Example]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for e in examples:
        digest.update(e.id.encode() + b"\0" + str(len(e.prompt_ids) + len(e.response_ids)).encode() + b"\n")
    return digest.hexdigest()[:16]


def _load_or_start(out_dir: Path, config: dict) -> dict:
    path = out_dir / MANIFEST
    if not path.exists():
        if any(out_dir.glob("shard-*.safetensors")):
            raise FeatureError(f"{out_dir}: holds shards but no {MANIFEST}; expected an empty folder or a cache "
                               "written by `taskspec features`")
        manifest = {"config": config, "shards": []}
        write_json_atomic(path, manifest)
        return manifest
    manifest = read_manifest(out_dir)
    saved = manifest["config"]
    keys = ("format", "version", "top_k", "examples_per_shard", "num_examples", "example_ids_hash")
    different = [k for k in keys if saved.get(k) != config.get(k)]
    # the target by its weights and shapes, not by how its folder was spelled
    different += [f"target {k}" for k in fingerprint_diff(saved.get("target") or {}, config["target"])]
    if different:
        raise FeatureError(f"{out_dir}: an existing feature cache was built with other settings ({', '.join(different)}"
                           "); use another --out folder or delete this one")
    for shard in manifest["shards"]:
        check_shard_header(out_dir, shard)
    return manifest


def read_manifest(folder: str | Path) -> dict:
    """manifest.json of a feature folder, its structure checked: {"config": {...}, "shards": [{"index", "file",
    "examples", "tokens"}, ...]}. FeatureError naming the file when it is missing, damaged or of another shape."""
    path = Path(folder) / MANIFEST
    manifest = read_json(path, FeatureError, "the manifest of a feature cache written by `taskspec features` "
                         "(a damaged one: delete the folder to rebuild the cache)")
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not isinstance(manifest.get("config"), dict) or not all(
            isinstance(s, dict) and isinstance(s.get("index"), int) and isinstance(s.get("file"), str)
            and isinstance(s.get("examples"), list) and isinstance(s.get("tokens"), int) for s in shards):
        raise FeatureError(f"{path}: not a feature-cache manifest; expected a JSON object with \"config\" and "
                           "\"shards\" (each with index, file, examples, tokens) as `taskspec features` writes it; "
                           "delete the folder to rebuild the cache")
    return manifest


def check_shard_header(folder: Path, shard: dict) -> None:
    """A listed shard is there, whole (safetensors checks its header against the file size) and has every tensor;
    cheap: the tensors are not read."""
    from safetensors import SafetensorError, safe_open

    path = folder / shard["file"]
    if not path.is_file():
        raise FeatureError(f"{folder}: {shard['file']} is listed in the manifest but missing")
    try:
        with safe_open(str(path), "pt") as f:
            keys = set(f.keys())
            offsets = f.get_slice("offsets").get_shape() if "offsets" in keys else None
    except (SafetensorError, OSError) as exc:
        raise FeatureError(f"{path}: damaged shard ({exc}); expected a safetensors file written by `taskspec "
                           "features`; delete the folder to rebuild the cache") from None
    missing = sorted(set(SHARD_KEYS) - keys)
    if missing or offsets != [len(shard["examples"]) + 1]:
        raise FeatureError(f"{path}: not a shard of this manifest (missing {missing or 'nothing'}, offsets of shape "
                           f"{offsets} for {len(shard['examples'])} examples); delete the folder to rebuild the cache")
